//! A minimal HTTP/1.1 client on one kept-alive connection, for steady load whose every answer
//! the test checks (status and body, by Content-Length).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

/// An HTTP/1.1 client on one kept-alive connection.
pub struct KeepAlive {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
}

impl KeepAlive {
    pub fn connect(addr: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
            host: addr.to_owned(),
        })
    }

    /// GET `path` with `headers` (each line ending in CRLF); (status, body).
    pub fn get(&mut self, path: &str, headers: &str) -> std::io::Result<(u16, String)> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{headers}\r\n",
            self.host
        );
        self.writer.write_all(request.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// One GET with `traceparent` (when given) on a keep-alive connection that stays open;
/// checks the status and body.
pub fn keep_alive_get(
    stream: &mut TcpStream,
    path: &str,
    traceparent: Option<&str>,
    body: &str,
) -> Result<(), String> {
    let header = traceparent.map_or_else(String::new, |t| format!("traceparent: {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: wirespan\r\n{header}\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{path}: {e}"))?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&response);
        if let Some((head, got)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>())
                })
                .and_then(Result::ok);
            if length.is_some_and(|n| got.len() >= n) {
                return if head.starts_with("HTTP/1.1 200 ") && got == body {
                    Ok(())
                } else {
                    Err(format!("{path}: wrong answer {text:?}"))
                };
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("{path}: closed by the server after {text:?}")),
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("{path}: {e}")),
        }
    }
}
