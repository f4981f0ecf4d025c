"""The HTTP edge: FastAPI app, routers, validation, the one error shape."""
