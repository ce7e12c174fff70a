"""HTTP/1.1 keep-alive file server for wirespan's tests: serves the directory given as argv[1]
on 127.0.0.1 (or argv[2]) on a free port, and prints the port on its first line. An IPv6 host
("::" included) gets an IPv6 socket; "::" is dual-stack, as Linux makes it by default, so IPv4
clients reach it as IPv4-mapped addresses.

`POST /echo` answers the request body reversed, chunked (two chunks): a request body and a
response body the privacy tests look for.

`GET /via/<port>/<path>` fetches http://127.0.0.1:<port>/<path> on the handler's own thread
and returns it: a thread-per-request server that calls out while serving (502 when the call
fails).

TLS: with HTTPS_CERT and HTTPS_KEY (PEM files) in the environment the server speaks HTTPS
(Python's ssl module: OpenSSL); with HTTPS_CA, `/via/` calls https://localhost:<port>/ and
trusts that CA.

With SET_COOKIE_FILE (a path: a value in the environment would be visible to the tracer) in
the environment, every answer carries that file's contents as a Set-Cookie header: a response
credential that the privacy tests look for in wirespan's outputs."""
import functools
import http.server
import os
import socket
import ssl
import sys
import urllib.error
import urllib.request


class KeepAliveHandler(http.server.SimpleHTTPRequestHandler):
    # http.server answers HTTP/1.0 (one request per connection) unless told otherwise.
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def end_headers(self):
        cookie_file = os.environ.get("SET_COOKIE_FILE")
        if cookie_file:
            with open(cookie_file) as f:
                self.send_header("Set-Cookie", f.read().strip())
        super().end_headers()

    def do_GET(self):
        if not self.path.startswith("/via/"):
            return super().do_GET()
        port, _, rest = self.path[len("/via/"):].partition("/")
        ca = os.environ.get("HTTPS_CA")
        if ca:
            url, context = f"https://localhost:{port}/{rest}", ssl.create_default_context(cafile=ca)
        else:
            url, context = f"http://127.0.0.1:{port}/{rest}", None
        try:
            with urllib.request.urlopen(url, context=context) as upstream:
                body = upstream.read()
        except (urllib.error.URLError, ConnectionError) as e:
            # A failed call (a closed port, a reset) is answered, as a gateway would.
            body = str(e).encode()
            self.send_response(502)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))[::-1]
        half = len(body) // 2
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in [c for c in (body[:half], body[half:]) if c] + [b""]:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))


def main():
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    handler = functools.partial(KeepAliveHandler, directory=sys.argv[1])
    server_class = http.server.ThreadingHTTPServer
    if ":" in host:
        server_class = type("Server6", (server_class,), {"address_family": socket.AF_INET6})
    server = server_class((host, 0), handler)
    cert, key = os.environ.get("HTTPS_CERT"), os.environ.get("HTTPS_KEY")
    if cert and key:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
