//! What each system's HTTP API looks like: the request for a put or a get in each mode, and
//! what a response's status and body mean (success, key absent, or an error kind).

use crate::args::{Consistency, Mode};
use std::fmt::Write as _;

/// Where `needle` first occurs in `hay`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Standard base64 with padding (RFC 4648), as etcd's JSON gateway carries keys and values.
pub(crate) fn base64(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Put,
    Get,
}

/// What a request needs besides the key.
pub(crate) struct Dialect {
    pub(crate) mode: Mode,
    pub(crate) consistency: Consistency,
    pub(crate) host: String,
}

impl Dialect {
    /// Appends the request for `op` on `key` to `out`. `value_b64` is `value` in base64 (etcd).
    pub(crate) fn request(
        &self,
        out: &mut Vec<u8>,
        op: Op,
        key: &str,
        value: &[u8],
        value_b64: &str,
    ) {
        let host = &self.host;
        match (self.mode, op) {
            (Mode::Raftkv | Mode::Raftexample, Op::Put) => {
                let path = if self.mode == Mode::Raftkv {
                    "/v1/kv/"
                } else {
                    "/"
                };
                let _ = write!(
                    Bytes(out),
                    "PUT {path}{key} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
                    value.len()
                );
                out.extend_from_slice(value);
            }
            (Mode::Raftkv, Op::Get) => {
                let q = match self.consistency {
                    Consistency::Linearizable => "",
                    Consistency::Local => "?consistency=local",
                };
                let _ = write!(
                    Bytes(out),
                    "GET /v1/kv/{key}{q} HTTP/1.1\r\nHost: {host}\r\n\r\n"
                );
            }
            (Mode::Raftexample, Op::Get) => {
                let _ = write!(Bytes(out), "GET /{key} HTTP/1.1\r\nHost: {host}\r\n\r\n");
            }
            (Mode::Etcd, _) => {
                let k = base64(key.as_bytes());
                let (path, body) = match op {
                    Op::Put => (
                        "put",
                        format!("{{\"key\":\"{k}\",\"value\":\"{value_b64}\"}}"),
                    ),
                    Op::Get => match self.consistency {
                        Consistency::Linearizable => ("range", format!("{{\"key\":\"{k}\"}}")),
                        Consistency::Local => (
                            "range",
                            format!("{{\"key\":\"{k}\",\"serializable\":true}}"),
                        ),
                    },
                };
                let _ = write!(
                    Bytes(out),
                    "POST /v3/kv/{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        }
    }

    /// Ok(true): success with a value, Ok(false): success, key absent; Err: the error kind.
    pub(crate) fn classify(&self, op: Op, status: u16, body: &[u8]) -> Result<bool, String> {
        match (self.mode, op, status) {
            (Mode::Etcd, Op::Get, 200) => Ok(find(body, b"\"kvs\"").is_some()),
            (Mode::Etcd, Op::Put, 200) => Ok(true),
            (Mode::Raftkv | Mode::Raftexample, Op::Put, 200..=299) => Ok(true),
            (Mode::Raftkv | Mode::Raftexample, Op::Get, 200) => Ok(true),
            (Mode::Raftkv | Mode::Raftexample, Op::Get, 404) => Ok(false),
            _ => Err(format!("http_{status}")),
        }
    }

    /// Whether a get's body holds `value` (sentinel checks).
    pub(crate) fn body_has_value(&self, body: &[u8], value: &[u8]) -> bool {
        match self.mode {
            Mode::Etcd => {
                find(body, format!("\"value\":\"{}\"", base64(value)).as_bytes()).is_some()
            }
            Mode::Raftkv | Mode::Raftexample => body == value,
        }
    }
}

/// `fmt::Write` into a byte vector.
pub(crate) struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn requests_of_each_dialect() {
        let d = |mode, consistency| Dialect {
            mode,
            consistency,
            host: "h:1".into(),
        };
        let req = |d: &Dialect, op| {
            let mut v = Vec::new();
            d.request(&mut v, op, "0042", b"val", &base64(b"val"));
            String::from_utf8(v).unwrap()
        };
        let lin = Consistency::Linearizable;
        let local = Consistency::Local;
        assert_eq!(
            req(&d(Mode::Raftkv, lin), Op::Put),
            "PUT /v1/kv/0042 HTTP/1.1\r\nHost: h:1\r\nContent-Length: 3\r\n\r\nval"
        );
        assert_eq!(
            req(&d(Mode::Raftkv, local), Op::Get),
            "GET /v1/kv/0042?consistency=local HTTP/1.1\r\nHost: h:1\r\n\r\n"
        );
        assert_eq!(
            req(&d(Mode::Raftexample, lin), Op::Get),
            "GET /0042 HTTP/1.1\r\nHost: h:1\r\n\r\n"
        );
        let body = "{\"key\":\"MDA0Mg==\",\"serializable\":true}";
        assert_eq!(
            req(&d(Mode::Etcd, local), Op::Get),
            format!("POST /v3/kv/range HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        );
        assert!(req(&d(Mode::Etcd, lin), Op::Put)
            .ends_with("{\"key\":\"MDA0Mg==\",\"value\":\"dmFs\"}"));
        let e = d(Mode::Etcd, lin);
        assert_eq!(e.classify(Op::Get, 200, b"{\"header\":{}}"), Ok(false));
        assert_eq!(
            e.classify(Op::Get, 200, b"{\"kvs\":[{\"value\":\"dmFs\"}]}"),
            Ok(true)
        );
        assert!(e.body_has_value(b"{\"kvs\":[{\"key\":\"x\",\"value\":\"dmFs\"}]}", b"val"));
        assert_eq!(e.classify(Op::Put, 503, b""), Err("http_503".into()));
        assert_eq!(d(Mode::Raftkv, lin).classify(Op::Get, 404, b""), Ok(false));
    }

    #[test]
    fn what_a_response_means_in_each_dialect() {
        let d = |mode| Dialect {
            mode,
            consistency: Consistency::Linearizable,
            host: "h:1".into(),
        };
        let (raftkv, raftexample, etcd) = (d(Mode::Raftkv), d(Mode::Raftexample), d(Mode::Etcd));
        for d in [&raftkv, &raftexample] {
            assert_eq!(d.classify(Op::Put, 204, b""), Ok(true));
            assert_eq!(d.classify(Op::Get, 200, b"v"), Ok(true));
            assert_eq!(d.classify(Op::Get, 404, b"key not found\n"), Ok(false));
            // A 404 on a put is no success: the path was wrong.
            assert_eq!(d.classify(Op::Put, 404, b""), Err("http_404".into()));
            for status in [409, 413, 503, 504] {
                assert_eq!(
                    d.classify(Op::Get, status, b""),
                    Err(format!("http_{status}"))
                );
            }
            assert!(d.body_has_value(b"0123", b"0123"));
            assert!(!d.body_has_value(b"01234", b"0123"));
        }
        // etcd's gateway answers 200 for a missing key, without "kvs" (its JSON omits empty
        // fields), and with "count" as a string.
        let missing = br#"{"header":{"cluster_id":"1","member_id":"2","revision":"9","raft_term":"2"},"count":"0"}"#;
        assert_eq!(etcd.classify(Op::Get, 200, missing), Ok(false));
        let found = br#"{"header":{"revision":"9"},"kvs":[{"key":"MDA0Mg==","create_revision":"3","mod_revision":"9","version":"2","value":"dmFs"}],"count":"1"}"#;
        assert_eq!(etcd.classify(Op::Get, 200, found), Ok(true));
        assert!(etcd.body_has_value(found, b"val"));
        assert!(!etcd.body_has_value(found, b"other"));
        assert!(!etcd.body_has_value(missing, b"val"));
        assert_eq!(etcd.classify(Op::Put, 200, br#"{"header":{}}"#), Ok(true));
        // The gateway's errors come as other statuses with a JSON body.
        assert_eq!(
            etcd.classify(Op::Put, 400, br#"{"code":3,"message":"bad"}"#),
            Err("http_400".into())
        );
    }
}
