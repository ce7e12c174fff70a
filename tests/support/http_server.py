"""HTTP/1.1 keep-alive file server for wirespan's tests: serves the directory given as argv[1]
on 127.0.0.1 (or argv[2]) on a free port, and prints the port on its first line."""
import functools
import http.server
import sys


class KeepAliveHandler(http.server.SimpleHTTPRequestHandler):
    # http.server answers HTTP/1.0 (one request per connection) unless told otherwise.
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass


def main():
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    handler = functools.partial(KeepAliveHandler, directory=sys.argv[1])
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
