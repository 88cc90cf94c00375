"""SQL read models and the projector that keeps them."""
