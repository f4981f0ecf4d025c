"""Payment Gateway Manager: payment providers behind one API, and a participant in payment sagas."""

__version__ = "0.1.0"
