//! The plumbing the loopback test servers share: a listener on 127.0.0.1 (and only there), an
//! accept loop on a thread of its own with its own current-thread tokio runtime, and a guard that
//! stops the loop (and joins its thread) when dropped.
//!
//! ```ignore
//! let server = Loopback::serve("my-server", 0, move |stream| serve(stream, shared.clone()))?;
//! println!("{}", server.url()); // http://127.0.0.1:PORT
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A running accept loop on 127.0.0.1; stops when dropped. Connections already accepted are not
/// waited for: their tasks end with the runtime, their threads (`serve_blocking`) on their own.
pub struct Loopback {
    addr: SocketAddr,
    url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Loopback {
    /// Listens on 127.0.0.1:`port` (0 = ephemeral) and accepts connections on a thread named
    /// `name`, with its own current-thread tokio runtime; each connection is given to `handler`
    /// (on the accept loop) and the future it returns runs as a task of that runtime (its output
    /// is dropped).
    pub fn serve<F, Fut>(name: &str, port: u16, mut handler: F) -> std::io::Result<Loopback>
    where
        F: FnMut(TcpStream) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("loopback server runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("listener");
                    loop {
                        tokio::select! {
                            _ = &mut stop_rx => break,
                            accepted = listener.accept() => {
                                if let Ok((stream, _)) = accepted {
                                    tokio::spawn(handler(stream));
                                }
                            }
                        }
                    }
                });
            })?;
        Ok(Loopback {
            addr,
            url: format!("http://{addr}"),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Like [`Loopback::serve`], for a blocking `handler`: each connection (a blocking std
    /// stream) is handled on a new thread of its own.
    pub fn serve_blocking<F>(name: &str, port: u16, handler: F) -> std::io::Result<Loopback>
    where
        F: Fn(std::net::TcpStream) + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        Loopback::serve(name, port, move |stream| {
            if let Ok(stream) = stream.into_std()
                && stream.set_nonblocking(false).is_ok()
            {
                let handler = handler.clone();
                std::thread::spawn(move || handler(stream));
            }
            std::future::ready(())
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago (bound, then released): for servers that
/// take a port number, and for "nothing listens there" tests.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// One HTTP/1.1 request as the blocking test servers read it: method, path (without the query),
/// headers (names lowercased) and body.
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// Reads the next request of a keep-alive connection; `None` when the client closed it.
    pub fn read(reader: &mut impl std::io::BufRead) -> std::io::Result<Option<Request>> {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let mut words = line.split_whitespace();
        let method = words.next().unwrap_or("GET").to_string();
        let target = words.next().unwrap_or("/");
        let path = target.split('?').next().unwrap_or("/").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let mut req = Request {
            method,
            path,
            headers,
            body: Vec::new(),
        };
        let length = req
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0usize);
        req.body = vec![0u8; length];
        reader.read_exact(&mut req.body)?;
        Ok(Some(req))
    }

    /// The value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tokio::io::AsyncWriteExt;

    fn fetch(port: u16) -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn serves_on_loopback_until_dropped() {
        let server = Loopback::serve("loopback-test", 0, |mut stream| async move {
            let _ = stream.write_all(b"async").await;
        })
        .unwrap();
        assert!(server.addr().ip().is_loopback());
        assert_eq!(server.url(), format!("http://127.0.0.1:{}", server.port()));
        assert_eq!(fetch(server.port()).unwrap(), "async");
        let port = server.port();
        drop(server);
        assert!(fetch(port).is_err(), "still listening after drop");
    }

    #[test]
    fn blocking_handlers_get_blocking_streams() {
        let server = Loopback::serve_blocking("loopback-test", 0, |mut stream| {
            let _ = stream.write_all(b"blocking");
        })
        .unwrap();
        assert_eq!(fetch(server.port()).unwrap(), "blocking");
    }
}
