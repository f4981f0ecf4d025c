"""The built-in sandbox provider (docs/sandbox.md): a payment provider with its own API, state, hosted pages
and signed webhooks, served by the PGM process but reached only over HTTP, like any remote provider."""
