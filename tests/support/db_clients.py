"""A thread-per-request HTTP server whose handler calls PostgreSQL (psycopg) and Redis (redis-py),
for privileged_db: its database spans must sit under its server span through the thread that
served the request. Prints its address on its first line.

    python3 db_clients.py REDIS_HOST:PORT 'host=127.0.0.1 port=5432 user=postgres dbname=shop'

GET /py: a psycopg connection of its own (made in the handler's thread): a query with a literal
(simple protocol) and one with a parameter (extended protocol); then SET and GET through a
redis-py client shared by all threads (its connection made by the first request). 200 with a
line when all ran, 502 with the error otherwise. Values written contain "db-shop-secret".
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import redis

REDIS_HOST, REDIS_PORT = sys.argv[1].rsplit(":", 1)
PG = sys.argv[2]
CACHE = redis.Redis(host=REDIS_HOST, port=int(REDIS_PORT))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path != "/py":
            self.answer(404, "not found")
            return
        try:
            with psycopg.connect(PG) as conn:
                conn.execute("SELECT item FROM orders WHERE id = 1").fetchone()
                conn.execute("SELECT item FROM orders WHERE id = %s", (1,)).fetchone()
            CACHE.set("py:greeting", "db-shop-secret-py")
            CACHE.get("py:greeting")
        except Exception as error:  # the test reads the reason in the answer
            self.answer(502, f"{type(error).__name__}: {error}")
            return
        self.answer(200, "py: SELECT plain and parameterised, SET, GET")

    def answer(self, status, text):
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("127.0.0.1:%d" % server.server_address[1], flush=True)
server.serve_forever()
