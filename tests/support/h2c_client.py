"""HTTP/2 cleartext (h2c, prior knowledge) client for wirespan's tests, on the h2 library
(hyper-h2: Python's own HPACK encoder, neither curl's nor Go's). It sends the request in the
file argv[1] argv[4] times, one stream after another on one connection to argv[2]:argv[3], and
prints `status=<code>` for each answer. The file holds the path (with its query) on its first
line and `name: value` headers on the others: credentials stay off the command line, which
every user of the machine (and the tracer) sees. curl 7.88 cannot send a second request on an
h2c connection ("Error in the HTTP2 framing layer")."""
import socket
import sys

import h2.config
import h2.connection
import h2.events


def main():
    request_file, host, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with open(request_file) as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    path = lines[0]
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
    sock = socket.create_connection((host, port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    for _ in range(count):
        stream = conn.get_next_available_stream_id()
        pseudo = [(":method", "GET"), (":scheme", "http"), (":authority", f"{host}:{port}"), (":path", path)]
        conn.send_headers(stream, pseudo + [(k.lower(), v) for k, v in headers], end_stream=True)
        sock.sendall(conn.data_to_send())
        status, ended = "?", False
        while not ended:
            data = sock.recv(65536)
            if not data:
                sys.exit("the server closed the connection")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers).get(b":status", b"?").decode()
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                    ended = True
            sock.sendall(conn.data_to_send())
        print(f"status={status}", flush=True)
    conn.close_connection()
    sock.sendall(conn.data_to_send())
    sock.close()


if __name__ == "__main__":
    main()
