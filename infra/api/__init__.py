"""REST facade: FastAPI app factory, routes, auth, errors and the server entry point."""
