//! Helpers for end-to-end tests: start real `raftkv` processes on free loopback ports in a
//! temporary directory, talk HTTP to them, poll with deadlines, and kill everything on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `raftkv` binary: `RAFTKV_BIN` if set, else the workspace's own build of it, made up to
/// date once per test process (`cargo test` builds test harnesses, not other packages' binaries).
pub fn raftkv_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("RAFTKV_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "raftkv-io-real",
            "--bin",
            "raftkv",
        ]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the raftkv binary failed");
        let bin = profile_dir.join("raftkv");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p =
            std::env::temp_dir().join(format!("raftkv-e2e-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two free loopback ports per node (peer, api). Bound and released: good enough on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct NodeProc {
    pub id: u64,
    pub peer_port: u16,
    pub api_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    pub args: Vec<String>,
}

impl NodeProc {
    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }
}

pub struct Cluster {
    pub dir: TempDir,
    pub nodes: Vec<NodeProc>,
    /// Clusters run one at a time: a dozen raft processes sharing two cores make every timing
    /// in these tests a coin toss. Declared last so it is released after the processes die.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Cluster {
    /// Starts `n` nodes with `extra` flags each.
    pub fn start(tag: &str, n: u64, extra: &[&str]) -> Cluster {
        let mut c = Self::configure(tag, n, extra);
        for i in 0..c.nodes.len() {
            c.spawn(i);
        }
        c
    }

    /// Lays out `n` nodes (ports, directories, flags) without starting any.
    pub fn configure(tag: &str, n: u64, extra: &[&str]) -> Cluster {
        let dir = TempDir::new(tag);
        let mut nodes: Vec<NodeProc> = (1..=n)
            .map(|id| NodeProc {
                id,
                peer_port: free_port(),
                api_port: free_port(),
                data_dir: dir.0.join(format!("raftkv-{id}")),
                log: dir.0.join(format!("node-{id}.log")),
                child: None,
                args: extra.iter().map(|s| s.to_string()).collect(),
            })
            .collect();
        let cluster_flag = nodes
            .iter()
            .map(|n| n.peer_url())
            .collect::<Vec<_>>()
            .join(",");
        for n in &mut nodes {
            n.args
                .splice(0..0, ["--cluster".to_string(), cluster_flag.clone()]);
        }
        let guard = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Cluster {
            dir,
            nodes,
            _one_at_a_time: guard,
        }
    }

    /// Waits for node `i`'s process to exit on its own (a refusal at start, say).
    pub fn wait_exited(&mut self, i: usize, within: Duration) -> std::process::ExitStatus {
        let mut c = self.nodes[i].child.take().expect("started");
        wait_exit(&mut c, within)
    }

    /// (Re)starts node at position `i` with its recorded flags.
    pub fn spawn(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        assert!(
            n.child.is_none() || !n.is_running(),
            "node {} already running",
            n.id
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .unwrap();
        let child = Command::new(raftkv_bin())
            .arg("--id")
            .arg(n.id.to_string())
            .arg("--port")
            .arg(n.api_port.to_string())
            .arg("--data-dir")
            .arg(&n.data_dir)
            .args(["--tick-ms", "20"])
            .args(&n.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn raftkv");
        n.child = Some(child);
    }

    /// Adds a node entry (not started) with the given cluster list, for --join.
    pub fn add_joiner(&mut self, extra: &[&str]) -> usize {
        let id = self.nodes.len() as u64 + 1;
        let mut n = NodeProc {
            id,
            peer_port: free_port(),
            api_port: free_port(),
            data_dir: self.dir.0.join(format!("raftkv-{id}")),
            log: self.dir.0.join(format!("node-{id}.log")),
            child: None,
            args: Vec::new(),
        };
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.peer_url())
            .chain([n.peer_url()])
            .collect();
        n.args = [
            "--cluster".to_string(),
            urls.join(","),
            "--join".to_string(),
        ]
        .into_iter()
        .chain(extra.iter().map(|s| s.to_string()))
        .collect();
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for exit.
    pub fn stop(&mut self, i: usize) -> std::process::ExitStatus {
        let mut c = self.nodes[i].child.take().expect("running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        wait_exit(&mut c, Duration::from_secs(20))
    }

    /// Position of the node that reports itself leader, among running nodes.
    pub fn leader(&mut self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            self.nodes[i].is_running()
                && status(&self.nodes[i].api()).is_some_and(|s| s["role"] == "Leader")
        })
    }

    pub fn wait_leader(&mut self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self.leader() {
                return l;
            }
            assert!(Instant::now() < deadline, "no leader within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn wait_exit(c: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            panic!("process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` every 20 ms until it returns Some, or panics with `what` after `secs`.
pub fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .redirects(0)
        .build()
}

/// (status code, body) of a request; connection errors are code 0.
pub fn http(method: &str, url: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
    http_with(method, url, body, &[])
}

pub fn http_with(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> (u16, Vec<u8>) {
    let r = http_full(method, url, body, headers);
    (r.code, r.body)
}

/// A response with its headers (lower-case names).
pub struct Reply {
    /// 0 for a connection error.
    pub code: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn http_full(method: &str, url: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> Reply {
    let mut req = agent().request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(_) => {
            return Reply {
                code: 0,
                headers: Vec::new(),
                body: Vec::new(),
            }
        }
    };
    let code = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|k| {
            resp.header(&k)
                .map(|v| (k.to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut resp.into_reader(), &mut out);
    Reply {
        code,
        headers,
        body: out,
    }
}

pub fn status(api: &str) -> Option<serde_json::Value> {
    let (code, body) = http("GET", &format!("{api}/v1/status"), None);
    if code != 200 {
        return None;
    }
    serde_json::from_slice(&body).ok()
}

/// Files in `dir` ending with `suffix`.
pub fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A metric's value from /metrics.
pub fn metric(api: &str, name: &str) -> Option<u64> {
    let (code, body) = http("GET", &format!("{api}/metrics"), None);
    if code != 200 {
        return None;
    }
    String::from_utf8_lossy(&body).lines().find_map(|l| {
        l.strip_prefix(&format!("{name} "))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// PUT until acknowledged (204) or `secs` pass; retries reuse the request id.
pub fn put_acked(api: &str, key: &str, value: &str, client: u64, seq: u64, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (c, s) = (client.to_string(), seq.to_string());
    let headers = [
        ("x-raftkv-client-id", c.as_str()),
        ("x-raftkv-request-seq", s.as_str()),
    ];
    while Instant::now() < deadline {
        let (code, _) = http_with(
            "PUT",
            &format!("{api}/{key}"),
            Some(value.as_bytes()),
            &headers,
        );
        if code == 204 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
