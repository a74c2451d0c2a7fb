"""Web sites for agent training that need no network: each is a small, deterministic server.

- `parkrl.sites.wiki`: a generated encyclopaedia of fictional people, towns and companies, with
  BM25 search and multi-hop questions (`python -m parkrl.sites.wiki --port 8090`).
"""
