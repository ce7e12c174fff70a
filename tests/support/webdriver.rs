//! A real browser for the UI tests: Debian's Chromium in headless mode, driven through
//! chromedriver by the W3C WebDriver protocol (JSON over HTTP on loopback). Only what the tests
//! use: open a page, find elements by CSS, read their text, click, type, run a script, take a
//! screenshot. Chromium runs with a new empty profile and without its background networking
//! (this machine's closed network refuses those connections).

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Keys, as WebDriver sends them.
pub const ENTER: &str = "\u{E007}";
pub const ESCAPE: &str = "\u{E00C}";
/// The key WebDriver names an element reference with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session; closed (and chromedriver stopped) when dropped.
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
    profile: PathBuf,
}

/// Why the browser could not run, when its programs are missing.
pub fn missing() -> Option<String> {
    [CHROMIUM, CHROMEDRIVER]
        .iter()
        .find(|p| !Path::new(p).exists())
        .map(|p| {
            format!("{p} is missing: `cargo xtask setup` installs chromium and chromium-driver")
        })
}

impl Browser {
    /// Start chromedriver on a free loopback port and open a session with a `width`×`height`
    /// window.
    pub fn start(width: u32, height: u32) -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {CHROMEDRIVER}: {e}"))?;
        let profile = std::env::temp_dir().join(format!("wirespan-chromium-{port}"));
        let _ = std::fs::remove_dir_all(&profile);
        let mut browser = Self {
            driver,
            addr: format!("127.0.0.1:{port}"),
            session: String::new(),
            profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while browser.request("GET", "/status", None).is_err() {
            if Instant::now() > deadline {
                return Err("chromedriver did not answer".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            // Software WebGL (SwiftShader): Zipkin's dependency graph draws with WebGL.
            "--enable-unsafe-swiftshader".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser.profile.display()),
        ];
        let created = browser.request(
            "POST",
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
            }}})),
        )?;
        created["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session: {created}"))?
            .clone_into(&mut browser.session);
        Ok(browser)
    }

    /// A WebDriver command of this session; its `value`.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.request(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) -> Result<(), String> {
        self.command("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    pub fn url(&self) -> Result<String, String> {
        Ok(self
            .command("GET", "/url", None)?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// The elements matching `css` now.
    pub fn find_all(&self, css: &str) -> Result<Vec<Element>, String> {
        let found = self.command(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        Ok(found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_owned())))
            .collect())
    }

    /// Poll until `ready` says yes (it reads the page), or fail after `timeout` with what it
    /// last saw.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&Self) -> Result<Option<T>, String>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match ready(self) {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => "not yet".to_owned(),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for {what} ({last})"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn text(&self, element: &Element) -> Result<String, String> {
        Ok(self
            .command("GET", &format!("/element/{}/text", element.0), None)?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    pub fn click(&self, element: &Element) -> Result<(), String> {
        self.command(
            "POST",
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        )
        .map(drop)
    }

    pub fn type_into(&self, element: &Element, text: &str) -> Result<(), String> {
        self.command(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        )
        .map(drop)
    }

    /// The element that has the keyboard focus.
    pub fn active(&self) -> Result<Element, String> {
        let found = self.command("GET", "/element/active", None)?;
        found[ELEMENT]
            .as_str()
            .map(|id| Element(id.to_owned()))
            .ok_or_else(|| format!("no focused element: {found}"))
    }

    /// Type into whatever has the focus (`ENTER`, `ESCAPE` are keys).
    pub fn keys(&self, text: &str) -> Result<(), String> {
        let element = self.active()?;
        self.type_into(&element, text)
    }

    /// The element's size (width, height) in CSS pixels.
    pub fn size(&self, element: &Element) -> Result<(f64, f64), String> {
        let rect = self.command("GET", &format!("/element/{}/rect", element.0), None)?;
        Ok((
            rect["width"].as_f64().unwrap_or(0.0),
            rect["height"].as_f64().unwrap_or(0.0),
        ))
    }

    /// A mouse click at (`dx`, `dy`) from the element's centre: for what a canvas draws. The
    /// pointer rests there first for `hover`: a canvas graph (Zipkin's uses Vizceral) finds
    /// what is under the pointer on its next frame, and a click takes what it found.
    pub fn click_at(
        &self,
        element: &Element,
        dx: i64,
        dy: i64,
        hover: Duration,
    ) -> Result<(), String> {
        let actions = json!({"actions": [{
            "type": "pointer",
            "id": "mouse",
            "parameters": {"pointerType": "mouse"},
            "actions": [
                {"type": "pointerMove", "duration": 0, "origin": {ELEMENT: element.0}, "x": dx, "y": dy},
                {"type": "pause", "duration": hover.as_millis()},
                {"type": "pointerDown", "button": 0},
                {"type": "pointerUp", "button": 0}
            ]
        }]});
        self.command("POST", "/actions", Some(actions)).map(drop)
    }

    /// Run `script` (a function body; `arguments` are `args`) in the page; what it returns.
    pub fn script(&self, script: &str, args: &Value) -> Result<Value, String> {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// The visible page as a PNG file.
    pub fn screenshot(&self, path: &Path) -> Result<(), String> {
        let encoded = self.command("GET", "/screenshot", None)?;
        let png = base64_decode(encoded.as_str().unwrap_or_default())?;
        if !png.starts_with(b"\x89PNG") {
            return Err("the screenshot is not a PNG".into());
        }
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// One HTTP request to chromedriver; the JSON `value` of a 2xx answer, or the WebDriver
    /// error.
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(&self.addr).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let (head, payload) = read_response(&mut stream)?;
        let payload = String::from_utf8_lossy(&payload);
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let answer: Value = serde_json::from_str(&payload)
            .map_err(|e| format!("{method} {path}: not JSON ({e}): {payload}"))?;
        if (200..300).contains(&status) {
            Ok(answer["value"].clone())
        } else {
            Err(format!(
                "{method} {path}: {status} {}: {}",
                answer["value"]["error"], answer["value"]["message"]
            ))
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.request("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Element {
    /// The element as a script argument.
    pub fn reference(&self) -> Value {
        json!({ ELEMENT: self.0 })
    }

    /// The element a script returned, if it returned one.
    pub fn from_value(value: &Value) -> Option<Self> {
        value[ELEMENT].as_str().map(|id| Self(id.to_owned()))
    }
}

/// An HTTP/1.1 answer: its head and its body. chromedriver keeps the connection open whatever
/// the request says, so the body is read by its length (or its chunks), never to the end.
fn read_response(stream: &mut TcpStream) -> Result<(String, Vec<u8>), String> {
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 65536];
    let split = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the connection closed before the answer's head".into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = lower.contains("transfer-encoding: chunked");
    loop {
        let complete = match length {
            Some(length) => body.len() >= length,
            None if chunked => body.windows(5).any(|w| w == b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    let body = if chunked { dechunk(&body) } else { body };
    Ok((head, body))
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        let after = &rest[line_end + 2..];
        if size == 0 || after.len() < size {
            break;
        }
        out.extend_from_slice(&after[..size]);
        rest = after[size..]
            .strip_prefix(b"\r\n")
            .unwrap_or(&after[size..]);
    }
    out
}

fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let value = |c: u8| -> Result<u32, String> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("not base64: {:?}", c as char)),
        }
        .into())
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}
