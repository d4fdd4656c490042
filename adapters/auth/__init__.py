"""Authentication and user management for the northbound edges (docs/security.md).

``adapters.auth.authenticator``: :class:`Authenticator` (HTTP Basic, WS-Security
UsernameToken), ``adapters.auth.users``: managing users, ``adapters.auth.passwords``: the
hashes, ``adapters.auth.wssecurity``: the Security header, ``adapters.auth.schema``: the
tables. Nothing is imported here, so importing the tables stays cheap.
"""
