//! Minimal HTTP/1.0 requests on 127.0.0.1 for probes, metrics and the extender's verbs (no
//! HTTP client dependency).

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET http://ADDR/PATH`: the status code and the body.
pub async fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    request(addr, "GET", path, "").await
}

/// `POST http://ADDR/PATH` with a JSON `body`: the body of a 200 reply, else an error.
pub async fn post(addr: &str, path: &str, body: &str) -> anyhow::Result<String> {
    let (status, reply) = request(addr, "POST", path, body).await?;
    anyhow::ensure!(status == 200, "POST {path}: {status} {reply}");
    Ok(reply)
}

async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    let text = String::from_utf8_lossy(&reply);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}
