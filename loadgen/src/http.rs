//! A minimal HTTP/1.1 client: request bytes written as given, responses parsed with `httparse`
//! (`Content-Length`, chunked and read-to-EOF bodies), one keep-alive connection per client, so
//! the generator costs little CPU next to the servers it measures.

use crate::dialect::find;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head and body accepted.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
pub(crate) const MAX_BODY_BYTES: usize = 16 << 20;

#[derive(Debug)]
pub(crate) enum ReqError {
    Connect(std::io::Error),
    Io(std::io::Error),
    /// The server closed the connection before the response was complete.
    Closed,
    Timeout,
    Protocol(String),
}

impl ReqError {
    pub(crate) fn kind(&self) -> String {
        match self {
            ReqError::Connect(e) => format!("connect:{:?}", e.kind()),
            ReqError::Io(e) => format!("io:{:?}", e.kind()),
            ReqError::Closed => "closed".into(),
            ReqError::Timeout => "timeout".into(),
            ReqError::Protocol(_) => "bad_response".into(),
        }
    }

    pub(crate) fn detail(&self) -> String {
        match self {
            ReqError::Connect(e) | ReqError::Io(e) => e.to_string(),
            ReqError::Closed => "connection closed before the response was complete".into(),
            ReqError::Timeout => "no response within --timeout-ms".into(),
            ReqError::Protocol(m) => m.clone(),
        }
    }
}

pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) keep_alive: bool,
    /// `Retry-After` in seconds (the delta-seconds form; an HTTP date is ignored).
    pub(crate) retry_after_s: Option<u64>,
}

pub(crate) struct HttpConn<S> {
    pub(crate) io: S,
    pub(crate) buf: Vec<u8>,
    pub(crate) pos: usize,
    /// Body of the last response.
    pub(crate) body: Vec<u8>,
}

pub(crate) async fn connect(addr: &str) -> Result<HttpConn<TcpStream>, ReqError> {
    let s = TcpStream::connect(addr).await.map_err(ReqError::Connect)?;
    s.set_nodelay(true).map_err(ReqError::Connect)?;
    Ok(HttpConn::new(s))
}

pub(crate) enum Head {
    Partial,
    Done {
        len: usize,
        status: u16,
        keep_alive: bool,
        chunked: bool,
        content_length: Option<usize>,
        retry_after_s: Option<u64>,
    },
}

pub(crate) fn parse_head(data: &[u8]) -> Result<Head, ReqError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Head::Partial),
        Err(e) => return Err(ReqError::Protocol(format!("bad response head: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    let mut keep_alive = resp.version == Some(1);
    let mut chunked = false;
    let mut content_length = None;
    let mut retry_after_s = None;
    for h in resp.headers.iter() {
        let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = v
                .trim()
                .parse()
                .map_err(|_| ReqError::Protocol(format!("bad content-length {v:?}")))?;
            if content_length.is_some_and(|c| c != n) {
                return Err(ReqError::Protocol("conflicting content-length".into()));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            retry_after_s = v.trim().parse().ok();
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.split(',').any(|t| t.trim() == "chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            if v.split(',').any(|t| t.trim() == "close") {
                keep_alive = false;
            } else if v.split(',').any(|t| t.trim() == "keep-alive") {
                keep_alive = true;
            }
        }
    }
    Ok(Head::Done {
        len,
        status,
        keep_alive,
        chunked,
        content_length,
        retry_after_s,
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin> HttpConn<S> {
    pub(crate) fn new(io: S) -> Self {
        HttpConn {
            io,
            buf: Vec::with_capacity(16 * 1024),
            pos: 0,
            body: Vec::new(),
        }
    }

    pub(crate) fn avail(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub(crate) async fn read_more(&mut self) -> Result<(), ReqError> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.drain(..self.pos);
            self.pos = 0;
            self.buf.reserve(16 * 1024);
        }
        let n = self
            .io
            .read_buf(&mut self.buf)
            .await
            .map_err(ReqError::Io)?;
        if n == 0 {
            return Err(ReqError::Closed);
        }
        Ok(())
    }

    pub(crate) async fn fill(&mut self, need: usize) -> Result<(), ReqError> {
        while self.avail().len() < need {
            self.read_more().await?;
        }
        Ok(())
    }

    /// The next CRLF-terminated line (without CRLF), consumed.
    pub(crate) async fn line(&mut self) -> Result<Vec<u8>, ReqError> {
        loop {
            if let Some(i) = find(self.avail(), b"\r\n") {
                let l = self.avail()[..i].to_vec();
                self.pos += i + 2;
                return Ok(l);
            }
            if self.avail().len() > 4096 {
                return Err(ReqError::Protocol("chunk line too long".into()));
            }
            self.read_more().await?;
        }
    }

    pub(crate) fn take_body(&mut self, n: usize) {
        self.body
            .extend_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
    }

    /// Sends one request and reads its response; the body is left in `self.body`.
    pub(crate) async fn roundtrip(&mut self, req: &[u8]) -> Result<HttpResponse, ReqError> {
        self.io.write_all(req).await.map_err(ReqError::Io)?;
        self.io.flush().await.map_err(ReqError::Io)?;
        self.body.clear();
        let (status, mut keep_alive, chunked, content_length, retry_after_s) = loop {
            match parse_head(self.avail())? {
                Head::Partial => {
                    if self.avail().len() > MAX_HEAD_BYTES {
                        return Err(ReqError::Protocol("response head too large".into()));
                    }
                    self.read_more().await?;
                }
                Head::Done {
                    len,
                    status,
                    keep_alive,
                    chunked,
                    content_length,
                    retry_after_s,
                } => {
                    self.pos += len;
                    // Interim responses (100 Continue) precede the real one.
                    if (100..200).contains(&status) && status != 101 {
                        continue;
                    }
                    break (status, keep_alive, chunked, content_length, retry_after_s);
                }
            }
        };
        if status == 204 || status == 304 {
            // No body, whatever the headers say.
        } else if chunked {
            loop {
                let line = self.line().await?;
                let hex = String::from_utf8_lossy(&line);
                let hex = hex.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(hex, 16)
                    .map_err(|_| ReqError::Protocol(format!("bad chunk size {hex:?}")))?;
                if size == 0 {
                    // Trailers, up to an empty line.
                    while !self.line().await?.is_empty() {}
                    break;
                }
                if self.body.len() + size > MAX_BODY_BYTES {
                    return Err(ReqError::Protocol("response body too large".into()));
                }
                self.fill(size + 2).await?;
                self.take_body(size);
                if &self.avail()[..2] != b"\r\n" {
                    return Err(ReqError::Protocol("chunk not followed by CRLF".into()));
                }
                self.pos += 2;
            }
        } else if let Some(n) = content_length {
            if n > MAX_BODY_BYTES {
                return Err(ReqError::Protocol("response body too large".into()));
            }
            self.fill(n).await?;
            self.take_body(n);
        } else {
            // No length: the body runs to the end of the connection.
            keep_alive = false;
            loop {
                if self.avail().len() > MAX_BODY_BYTES {
                    return Err(ReqError::Protocol("response body too large".into()));
                }
                match self.read_more().await {
                    Ok(()) => {}
                    Err(ReqError::Closed) => break,
                    Err(e) => return Err(e),
                }
            }
            let n = self.avail().len();
            self.take_body(n);
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        Ok(HttpResponse {
            status,
            keep_alive,
            retry_after_s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves canned response bytes for each request the client sends.
    async fn exchange(responses: &'static [u8], requests: usize) -> Vec<(u16, bool, Vec<u8>)> {
        let (a, b) = tokio::io::duplex(64);
        let (mut rx, mut tx) = tokio::io::split(b);
        // Drain what the client writes so it never blocks.
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = rx.read_to_end(&mut sink).await;
        });
        let server = tokio::spawn(async move {
            // Dribble the responses out in small pieces to exercise partial reads.
            for chunk in responses.chunks(7) {
                tx.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            // Closing ends a body that runs to EOF.
            tx.shutdown().await.unwrap();
        });
        let mut c = HttpConn::new(a);
        let mut out = Vec::new();
        for _ in 0..requests {
            match c.roundtrip(b"GET / HTTP/1.1\r\n\r\n").await {
                Ok(r) => out.push((r.status, r.keep_alive, c.body.clone())),
                Err(e) => panic!("{e:?}"),
            }
        }
        server.await.unwrap();
        drop(c);
        drain.await.unwrap();
        out
    }

    #[tokio::test]
    async fn parses_length_chunked_and_no_body_responses() {
        let got = exchange(
            b"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
              HTTP/1.1 100 Continue\r\n\r\n\
              HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n\
              HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\n\r\nno\n",
            4,
        )
        .await;
        assert_eq!(
            got,
            vec![
                (204, true, b"".to_vec()),
                (200, true, b"hello".to_vec()),
                (200, true, b"abcde".to_vec()),
                (404, false, b"no\n".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn body_to_eof_and_truncation() {
        let got = exchange(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", 1).await;
        assert_eq!(got, vec![(200, false, b"until the end".to_vec())]);

        let (a, mut b) = tokio::io::duplex(1024);
        b.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
            .await
            .unwrap();
        drop(b);
        let mut c = HttpConn::new(a);
        assert!(matches!(
            c.roundtrip(b"GET / HTTP/1.1\r\n\r\n").await,
            Err(ReqError::Closed | ReqError::Io(_))
        ));
    }

    fn head(bytes: &[u8]) -> Result<(usize, u16, bool, bool, Option<usize>), String> {
        match parse_head(bytes) {
            Ok(Head::Done {
                len,
                status,
                keep_alive,
                chunked,
                content_length,
                ..
            }) => Ok((len, status, keep_alive, chunked, content_length)),
            Ok(Head::Partial) => Err("partial".into()),
            Err(e) => Err(e.kind()),
        }
    }

    #[test]
    fn retry_after_in_seconds_is_read_and_a_date_is_not() {
        let retry = |h: &[u8]| match parse_head(h) {
            Ok(Head::Done { retry_after_s, .. }) => retry_after_s,
            _ => panic!("not a whole head"),
        };
        assert_eq!(
            retry(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\r\n"),
            Some(1)
        );
        assert_eq!(
            retry(b"HTTP/1.1 503 x\r\nretry-after: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n"),
            None
        );
        assert_eq!(retry(b"HTTP/1.1 503 x\r\n\r\n"), None);
    }

    #[test]
    fn status_lines_and_the_headers_that_frame_a_body() {
        let h = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(head(h), Ok((h.len(), 204, true, false, None)));
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\nbody").map(|h| (h.1, h.4)),
            Ok((200, Some(12)))
        );
        // Keep-alive: HTTP/1.1 unless `close`; HTTP/1.0 only with `keep-alive`.
        let ka = |h: &[u8]| head(h).map(|h| h.2);
        assert_eq!(
            ka(b"HTTP/1.1 200 OK\r\nConnection: Upgrade, CLOSE\r\n\r\n"),
            Ok(false)
        );
        assert_eq!(ka(b"HTTP/1.0 200 OK\r\n\r\n"), Ok(false));
        assert_eq!(
            ka(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n"),
            Ok(true)
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(head(chunked).map(|h| h.3), Ok(true));
        // Not yet a whole head: wait for more bytes.
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\nContent-Le"),
            Err("partial".into())
        );
        assert_eq!(head(b""), Err("partial".into()));
        for bad in [
            &b"HTTP/1.1 abc OK\r\n\r\n"[..],
            b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            assert_eq!(
                head(bad),
                Err("bad_response".into()),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // The same length twice is no conflict.
        let twice = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(head(twice).map(|h| h.4), Ok(Some(2)));
    }

    #[tokio::test]
    async fn bad_chunks_and_huge_heads_are_bad_responses() {
        for resp in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY",
        ] {
            let (a, mut b) = tokio::io::duplex(1024);
            b.write_all(resp).await.unwrap();
            let mut c = HttpConn::new(a);
            let e = c.roundtrip(b"GET / HTTP/1.1\r\n\r\n").await.err().unwrap();
            assert_eq!(e.kind(), "bad_response", "{e:?}");
        }
        let (a, mut b) = tokio::io::duplex(MAX_HEAD_BYTES * 2);
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() <= MAX_HEAD_BYTES + 4096 {
            big.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        let writer = tokio::spawn(async move {
            let _ = b.write_all(&big).await;
            b
        });
        let mut c = HttpConn::new(a);
        let e = c.roundtrip(b"GET / HTTP/1.1\r\n\r\n").await.err().unwrap();
        assert_eq!(e.kind(), "bad_response", "{e:?}");
        drop(c);
        drop(writer.await.unwrap());
    }

    #[test]
    fn error_kinds_are_what_the_report_counts() {
        use std::io::{Error, ErrorKind};
        let refused = ReqError::Connect(Error::from(ErrorKind::ConnectionRefused));
        assert_eq!(refused.kind(), "connect:ConnectionRefused");
        let reset = ReqError::Io(Error::from(ErrorKind::ConnectionReset));
        assert_eq!(reset.kind(), "io:ConnectionReset");
        assert_eq!(ReqError::Closed.kind(), "closed");
        assert_eq!(ReqError::Timeout.kind(), "timeout");
        assert_eq!(ReqError::Protocol("x".into()).kind(), "bad_response");
        assert_eq!(ReqError::Protocol("x".into()).detail(), "x");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let e = connect(&addr).await.err().expect("nobody listens");
        assert_eq!(e.kind(), "connect:ConnectionRefused");
    }
}
