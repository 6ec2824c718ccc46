//! A small HTTP/1.1 server for the `eddy` command's read-only endpoints:
//! the Prometheus scrape (`--metrics-addr`) and the dashboard (`--ui-addr`).
//!
//! It answers `GET` (and `HEAD`) only, one request per connection
//! (`Connection: close`), from a route function; that is all a scraper and
//! a polling dashboard need, and it keeps a web framework and its crates
//! out of the build (see docs/observability.md). Addresses default to
//! loopback: `--metrics-addr 9464` binds 127.0.0.1:9464.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Longest request head read (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What a route answers.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// 200 with a body.
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status: 200,
            content_type,
            body: body.into(),
        }
    }

    /// 200 with JSON.
    pub fn json(value: &impl serde::Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::ok("application/json", body),
            Err(e) => Self::error(500, &e.to_string()),
        }
    }

    /// An error with a plain-text reason.
    pub fn error(status: u16, why: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{why}\n").into_bytes(),
        }
    }
}

/// Maps a path (without its query string) to a response; `None` is 404.
pub type Routes = Arc<dyn Fn(&str) -> Option<Response> + Send + Sync>;

/// Parses an endpoint address: `HOST:PORT`, or a bare port on loopback.
///
/// # Errors
/// Neither form parses.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse::<SocketAddr>()
        .map_err(|e| format!("`{s}` is neither a port nor HOST:PORT: {e}"))
}

/// Binds `addr` and serves `routes` until the returned task is aborted.
/// Returns the bound address (port 0 picks a free one) and the task.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    routes: Routes,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors or similar: back off rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let routes = routes.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(READ_TIMEOUT, answer(stream, routes)).await;
            });
        }
    });
    Ok((bound, task))
}

async fn answer(mut stream: TcpStream, routes: Routes) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return write(
                &mut stream,
                &Response::error(431, "request head too large"),
                false,
            )
            .await;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let response = match method {
        "GET" | "HEAD" => {
            let path = target.split(['?', '#']).next().unwrap_or("");
            routes(path).unwrap_or_else(|| Response::error(404, "not found"))
        }
        _ => Response::error(405, "only GET is served"),
    };
    write(&mut stream, &response, method != "HEAD").await
}

async fn write(stream: &mut TcpStream, r: &Response, body: bool) -> std::io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if body {
        stream.write_all(&r.body).await?;
    }
    stream.shutdown().await
}

/// Fetches `http://{addr}{path}` and returns the status and body: what the
/// tests (and `eddy` itself, nowhere else) use to read an endpoint.
///
/// # Errors
/// The connection or the read fails, or the answer is not HTTP.
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).await?;
    let text = String::from_utf8_lossy(&all).into_owned();
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_binds_loopback() {
        assert_eq!(
            parse_addr("9464").unwrap(),
            "127.0.0.1:9464".parse().unwrap()
        );
        assert_eq!(
            parse_addr("0.0.0.0:80").unwrap(),
            "0.0.0.0:80".parse().unwrap()
        );
        assert!(parse_addr("localhost").is_err());
    }

    #[tokio::test]
    async fn routes_answer_and_unknown_paths_are_404() {
        let routes: Routes =
            Arc::new(|p: &str| (p == "/x").then(|| Response::ok("text/plain", "hi")));
        let (addr, task) = serve(parse_addr("0").unwrap(), routes).await.unwrap();
        assert_eq!(get(addr, "/x?y=1").await.unwrap(), (200, "hi".to_string()));
        assert_eq!(get(addr, "/nope").await.unwrap().0, 404);
        task.abort();
    }
}
