"""HTTP/1.1 under the routes: asyncio accepts connections and runs TLS, httptools (the parser
uvicorn uses) reads requests, and a few worker threads run the handlers, so bcrypt, the
exposition and webhook decisions never hold up the event loop.

What the servers we measured leave out is owned here (see docs/benchmarks.md):

- a request's headers must arrive within ``read_header_timeout``, the whole request within
  ``read_timeout`` (in all, however slowly it comes), an idle keep-alive connection is
  closed after ``idle_timeout``, and a TLS handshake that stalls is dropped after
  ``tls_handshake_timeout``;
- at most ``max_connections`` connections (below the process's file-descriptor limit); at
  the cap, a new connection evicts the oldest one that is still in its handshake, still
  sending its headers or idle, else the one whose body has come slowest, so a scrape never
  waits on clients that send nothing, or a byte a second;
- at most ``MAX_PIPELINED`` requests queued behind the one being answered (then a 429), and
  per lane, if the handler says so, at most so many requests of one client address.
"""

from exporter.transport.listener import HttpServer
from exporter.transport.messages import Handler, Headers, Limits, Request, Response

__all__ = ["Handler", "Headers", "HttpServer", "Limits", "Request", "Response"]
