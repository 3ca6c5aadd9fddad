"""The node's web page and its JSON API under /api/ (--web-listen; docs/web.md): server-rendered
HTML and JSON over the same cluster services and checks as the gRPC API, for a caller known
from a token the API signed (api/tokens.py)."""
