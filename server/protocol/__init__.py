"""OpenAI's wire models, one module per endpoint, named and ordered as OpenAI names them."""

__all__: list[str] = []
