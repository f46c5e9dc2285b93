//! SPDY/3.1, the server side of kubectl's port-forward: the framing of moby/spdystream (what client-go and the
//! kubelet use), the kubelet's stream pairs (`pkg/kubelet/cri/streaming/portforward/httpstream.go`) and the
//! container runtime's copy loop. Reached two ways (`portforward.rs`): a plain `Upgrade: SPDY/3.1` and the
//! WebSocket tunnel `SPDY/3.1+portforward.k8s.io` whose binary messages carry the same bytes. What is emulated, and
//! from which upstream file: `README.md`, "Port-forward".

use crate::portforward::PodTarget;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The port-forward protocol the kubelet supports (`httpstream.Handshake` against
/// `portforward.PortForwardProtocolV1Name`).
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The prefix of a SPDY protocol tunnelled through a WebSocket subprotocol (apimachinery
/// `pkg/util/portforward/constants.go` `WebsocketsSPDYTunnelingPrefix`); the tunnel takes the offered protocols with
/// this prefix and the suffix `.k8s.io` (`KubernetesSuffix`).
pub const TUNNEL_PREFIX: &str = "SPDY/3.1+";

// Control frame types and flags (spdystream `spdy/types.go`).
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 0x01;
// RST_STREAM status codes.
const PROTOCOL_ERROR: u32 = 1;
const CANCEL: u32 = 5;

/// How long the container runtime lets the other direction finish once one direction of a forward ended
/// (containerd `internal/cri/server/sandbox_portforward_linux.go`: "give a chance to terminate gracefully or timeout
/// after 1s").
const LINGER: Duration = Duration::from_secs(1);
/// How often a running connection checks that its pod is still there and running.
const POD_CHECK: Duration = Duration::from_millis(100);

/// SPDY/3's header-compression dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1; spdystream
/// `spdy/dictionary.go` `headerDictionary`), 1423 bytes.
const DICTIONARY: &[u8] = b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\x00\x06d\
elete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\x00\x00\x00\x0faccept-\
encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-ranges\x00\x00\x00\x03age\x00\x00\x00\x05\
allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\
\x0ccontent-base\x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econte\
nt-length\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\
\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07\
expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-si\
nce\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\x0d\
last-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12\
proxy-authenticate\x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\
\x00\x00\x0bretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\x11\
transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03\
via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\
\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03\
url\x00\x00\x00\x06public\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin10\
0101201202205206300302303304305306307402405406407408409410411412413414415416417502504505203 Non-Autho\
ritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden40\
4 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun \
Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,i\
mage/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-\
age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// The zlib header of a stream with a preset dictionary (RFC 1950 §2.2): CMF 0x78 (deflate, 32K window), FLG with
/// level 3 (best, what Go's `zlib.NewWriterLevelDict(.., BestCompression, ..)` writes), FDICT, and the check bits
/// that make `CMF·256 + FLG` a multiple of 31.
const ZLIB_HEADER: [u8; 2] = [0x78, 0xe0 | (31 - (0x78e0 % 31)) as u8];

/// Adler-32 (RFC 1950), for the dictionary id of a zlib header.
fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + byte as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// The receiving half of the connection's header compression: one zlib stream for every header block the client
/// sends, preset with [`DICTIONARY`] (spdystream `spdy/read.go` `uncorkHeaderDecompressor`:
/// `zlib.NewReaderDict`). The workspace's flate2 backend has no preset dictionary, so the raw inflater is primed with
/// a stored block holding the dictionary: the same window a preset dictionary gives.
struct Inflater {
    z: Decompress,
    started: bool,
}

impl Inflater {
    fn new() -> Inflater {
        Inflater {
            z: Decompress::new(false),
            started: false,
        }
    }

    /// The plain bytes of one header block (each ends with a sync flush, so it decodes whole).
    fn block(&mut self, mut data: &[u8]) -> Result<Vec<u8>, String> {
        if !self.started {
            // RFC 1950: CMF (deflate, 32K window), FLG with FDICT, then the dictionary's Adler-32.
            if data.len() < 6
                || data[0] & 0x0f != 8
                || !((data[0] as u16) << 8 | data[1] as u16).is_multiple_of(31)
                || data[1] & 0x20 == 0
            {
                return Err(
                    "header block does not start a zlib stream with a preset dictionary".into(),
                );
            }
            let id = u32::from_be_bytes([data[2], data[3], data[4], data[5]]);
            if id != adler32(DICTIONARY) {
                return Err(format!(
                    "header block uses dictionary {id:#x}, not SPDY/3's"
                ));
            }
            let len = DICTIONARY.len() as u16;
            let mut primer = vec![0u8];
            primer.extend(len.to_le_bytes());
            primer.extend((!len).to_le_bytes());
            primer.extend(DICTIONARY);
            self.inflate(&primer)?;
            self.started = true;
            data = &data[6..];
        }
        self.inflate(data)
    }

    fn inflate(&mut self, mut data: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(data.len() * 4 + 64);
        loop {
            let before = self.z.total_in();
            self.z
                .decompress_vec(data, &mut out, FlushDecompress::Sync)
                .map_err(|e| format!("header block: {e}"))?;
            data = &data[(self.z.total_in() - before) as usize..];
            if out.len() < out.capacity() {
                if data.is_empty() {
                    return Ok(out);
                }
                return Err("header block: compressed data ends early".into());
            }
            out.reserve(out.capacity());
        }
    }
}

/// The sending half: one zlib stream for every header block this side sends, sync-flushed after each
/// (spdystream `spdy/write.go`). Its header names [`DICTIONARY`] (Go's `zlib.NewReaderDict` checks the id); the
/// blocks themselves do not refer back into it (the pure-Rust backend cannot preset a compressor's window), which
/// any inflater preset with it decodes the same.
struct Deflater {
    z: Compress,
    started: bool,
}

impl Deflater {
    fn new() -> Deflater {
        Deflater {
            z: Compress::new(Compression::best(), false),
            started: false,
        }
    }

    fn block(&mut self, mut plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + 64);
        if !self.started {
            self.started = true;
            out.extend(ZLIB_HEADER);
            out.extend(adler32(DICTIONARY).to_be_bytes());
        }
        loop {
            let before = self.z.total_in();
            self.z
                .compress_vec(plain, &mut out, FlushCompress::Sync)
                .expect("deflate into a vector");
            plain = &plain[(self.z.total_in() - before) as usize..];
            if plain.is_empty() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(out.capacity());
        }
    }
}

/// A name/value header block (SPDY/3 §2.6.10): a count, then length-prefixed lowercase names and values, several
/// values of one name separated by NUL (spdystream `parseHeaderValueBlock`).
fn parse_headers(block: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut rest = block;
    let mut take = |n: usize| -> Result<&[u8], String> {
        if rest.len() < n {
            return Err("header block is truncated".to_string());
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let u32_of = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = u32_of(take(4)?);
    let mut out = Vec::new();
    for _ in 0..count {
        let n = u32_of(take(4)?);
        let name = String::from_utf8_lossy(take(n)?).to_string();
        if name != name.to_lowercase() {
            return Err(format!("header name {name:?} is not lowercase"));
        }
        if out.iter().any(|(k, _): &(String, String)| *k == name) {
            return Err(format!("header {name:?} appears twice"));
        }
        let n = u32_of(take(4)?);
        let value = String::from_utf8_lossy(take(n)?).to_string();
        out.extend(value.split('\0').map(|v| (name.clone(), v.to_string())));
    }
    Ok(out)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

/// One frame as read off the connection (SPDY/3 §2.2): a control frame (version, type, flags, payload) or a data
/// frame (stream id, flags, payload).
#[derive(Debug, PartialEq)]
enum Frame {
    Control {
        kind: u16,
        flags: u8,
        payload: Vec<u8>,
    },
    Data {
        stream: u32,
        flags: u8,
        payload: Vec<u8>,
    },
}

/// Takes one whole frame off the front of `buf`, if it holds one.
fn next_frame(buf: &mut Vec<u8>) -> Option<Frame> {
    if buf.len() < 8 {
        return None;
    }
    let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let flags = buf[4];
    let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    if buf.len() < 8 + len {
        return None;
    }
    let payload = buf[8..8 + len].to_vec();
    buf.drain(..8 + len);
    Some(if word & 0x8000_0000 != 0 {
        Frame::Control {
            kind: (word & 0xffff) as u16,
            flags,
            payload,
        }
    } else {
        Frame::Data {
            stream: word & 0x7fff_ffff,
            flags,
            payload,
        }
    })
}

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend((0x8000_0000u32 | 3 << 16 | kind as u32).to_be_bytes());
    out.extend((((flags as u32) << 24) | payload.len() as u32).to_be_bytes());
    out.extend(payload);
    out
}

/// What the connection sends; the writer encodes in order (the header compression is one stream).
#[derive(Debug)]
enum Out {
    Reply(u32),
    Data(u32, Vec<u8>, bool),
    Reset(u32, u32),
    Ping(u32),
}

impl Out {
    fn encode(&self, deflate: &mut Deflater) -> Vec<u8> {
        match self {
            // The kubelet accepts a stream with an empty reply (apimachinery `spdy/connection.go` `newSpdyStream`:
            // `stream.SendReply(http.Header{}, false)`).
            Out::Reply(id) => {
                let mut p = id.to_be_bytes().to_vec();
                p.extend(deflate.block(&0u32.to_be_bytes()));
                control(SYN_REPLY, 0, &p)
            }
            Out::Data(id, data, fin) => {
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend((id & 0x7fff_ffff).to_be_bytes());
                out.extend(
                    ((if *fin { FLAG_FIN as u32 } else { 0 } << 24) | data.len() as u32)
                        .to_be_bytes(),
                );
                out.extend(data);
                out
            }
            Out::Reset(id, status) => {
                let mut p = id.to_be_bytes().to_vec();
                p.extend(status.to_be_bytes());
                control(RST_STREAM, 0, &p)
            }
            Out::Ping(id) => control(PING, 0, &id.to_be_bytes()),
        }
    }
}

/// The upgraded connection: the raw bytes of a plain SPDY upgrade, or the binary messages of the WebSocket tunnel
/// (client-go `tools/portforward/tunneling_connection.go`: every write is one binary message, a read continues
/// across messages, anything but a binary message is an error).
pub enum Transport {
    Raw(TokioIo<hyper::upgrade::Upgraded>),
    Tunnel(Box<WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>>),
}

enum Reader {
    Raw(tokio::io::ReadHalf<TokioIo<hyper::upgrade::Upgraded>>),
    Tunnel(futures::stream::SplitStream<WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>>),
}

enum Writer {
    Raw(tokio::io::WriteHalf<TokioIo<hyper::upgrade::Upgraded>>),
    Tunnel(futures::stream::SplitSink<WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>, Message>),
}

impl Transport {
    fn split(self) -> (Reader, Writer) {
        match self {
            Transport::Raw(io) => {
                let (r, w) = tokio::io::split(io);
                (Reader::Raw(r), Writer::Raw(w))
            }
            Transport::Tunnel(ws) => {
                let (w, r) = (*ws).split();
                (Reader::Tunnel(r), Writer::Tunnel(w))
            }
        }
    }
}

impl Reader {
    /// The next bytes from the client; `None` at the end of the connection or on a transport error.
    async fn next(&mut self) -> Option<Vec<u8>> {
        match self {
            Reader::Raw(r) => {
                let mut buf = vec![0u8; 32 * 1024];
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some(buf)
                    }
                }
            }
            Reader::Tunnel(r) => loop {
                match r.next().await? {
                    Ok(Message::Binary(b)) => return Some(b.to_vec()),
                    Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                    _ => return None,
                }
            },
        }
    }
}

impl Writer {
    async fn send(&mut self, bytes: Vec<u8>) -> bool {
        match self {
            Writer::Raw(w) => w.write_all(&bytes).await.is_ok(),
            Writer::Tunnel(w) => w.send(Message::binary(bytes)).await.is_ok(),
        }
    }

    /// Ends the connection: a normal WebSocket close (`TunnelingConnection.Close`) or closing the socket.
    async fn close(self) {
        match self {
            Writer::Raw(mut w) => {
                let _ = w.shutdown().await;
            }
            Writer::Tunnel(mut w) => {
                let close = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                };
                let _ = w.send(Message::Close(Some(close))).await;
                let _ = w.close().await;
            }
        }
    }
}

/// What the client sends on a data stream, for the forward: bytes, then `None` at its end (FIN or reset).
type FromClient = mpsc::UnboundedReceiver<Option<Vec<u8>>>;

/// A stream pair being assembled for one `requestid` (kubelet `httpStreamPair`).
#[derive(Default)]
struct Pair {
    data: Option<(u32, u16, FromClient)>,
    error: Option<u32>,
}

/// Serves one upgraded port-forward connection until the client goes away, the connection breaks or the pod stops:
/// each client stream is checked like the kubelet's `httpStreamReceived` (refused with RST_STREAM otherwise), paired
/// by `requestid` into a data and an error stream, and each complete pair is forwarded to the pod's port.
pub async fn serve(transport: Transport, pod: Arc<PodTarget>) {
    let (mut reader, mut writer) = transport.split();
    let (out, mut outgoing) = mpsc::unbounded_channel::<Out>();
    let write = tokio::spawn(async move {
        let mut deflate = Deflater::new();
        while let Some(frame) = outgoing.recv().await {
            if !writer.send(frame.encode(&mut deflate)).await {
                break;
            }
        }
        writer.close().await;
    });
    let mut inflate = Inflater::new();
    let mut buf = Vec::new();
    // spdystream `validateStreamId`: a new stream's id may not go below the last one's + 2.
    let mut next_id = 1u32;
    let mut to_forward: HashMap<u32, mpsc::UnboundedSender<Option<Vec<u8>>>> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = Vec::new();
    let mut check = tokio::time::interval(POD_CHECK);
    'conn: loop {
        tokio::select! {
            bytes = reader.next() => match bytes {
                Some(b) => buf.extend(b),
                None => break,
            },
            _ = check.tick() => {
                if pod.alive() { continue } else { break }
            }
        }
        while let Some(frame) = next_frame(&mut buf) {
            match frame {
                Frame::Data {
                    stream,
                    flags,
                    payload,
                } => {
                    // Data for an unknown (or reset) stream is dropped (spdystream `handleDataFrame`).
                    if let Some(tx) = to_forward.get(&stream) {
                        if !payload.is_empty() {
                            let _ = tx.send(Some(payload));
                        }
                        if flags & FLAG_FIN != 0 {
                            let _ = tx.send(None);
                            to_forward.remove(&stream);
                        }
                    }
                }
                Frame::Control {
                    kind,
                    flags,
                    payload,
                } => match kind {
                    SYN_STREAM => {
                        let id = be32(&payload, 0) & 0x7fff_ffff;
                        let Ok(block) = inflate.block(payload.get(10..).unwrap_or_default()) else {
                            break 'conn;
                        };
                        let Ok(headers) = parse_headers(&block) else {
                            break 'conn;
                        };
                        if id == 0 || id < next_id {
                            let _ = out.send(Out::Reset(id, PROTOCOL_ERROR));
                            continue;
                        }
                        next_id = id + 2;
                        let (port, stream_type) = match check_stream(&headers) {
                            Ok(v) => v,
                            Err(_) => {
                                // apimachinery `newSpdyStream`: a stream the handler rejects is reset.
                                let _ = out.send(Out::Reset(id, CANCEL));
                                continue;
                            }
                        };
                        let _ = out.send(Out::Reply(id));
                        let request = match header(&headers, "requestid") {
                            "" if stream_type == "error" => id.to_string(),
                            "" => id.saturating_sub(2).to_string(),
                            r => r.to_string(),
                        };
                        let pair = pairs.entry(request.clone()).or_default();
                        let (tx, rx) = mpsc::unbounded_channel();
                        let duplicate = if stream_type == "data" {
                            let dup = pair.data.is_some();
                            if !dup {
                                pair.data = Some((id, port, rx));
                                to_forward.insert(id, tx.clone());
                            }
                            dup
                        } else {
                            let dup = pair.error.is_some();
                            pair.error.get_or_insert(id);
                            dup
                        };
                        if flags & FLAG_FIN != 0 {
                            let _ = tx.send(None);
                            to_forward.remove(&id);
                        }
                        if duplicate {
                            // kubelet `run` → `printError`: on the pair's error stream, when it has one.
                            if let Some(e) = pair.error {
                                let msg = format!(
                                    "error processing stream for request {request}: {stream_type} stream already assigned"
                                );
                                let _ = out.send(Out::Data(e, msg.into_bytes(), false));
                            }
                            continue;
                        }
                        if let Some(error) = pair.error
                            && pair.data.is_some()
                            && let Some(Pair {
                                data: Some((data, port, rx)),
                                ..
                            }) = pairs.remove(&request)
                        {
                            forwards.push(tokio::spawn(forward(
                                Arc::clone(&pod),
                                port,
                                data,
                                error,
                                rx,
                                out.clone(),
                            )));
                        }
                    }
                    RST_STREAM => {
                        // The client reset the stream: nothing more is read from it (spdystream `handleResetFrame`).
                        if let Some(tx) = to_forward.remove(&be32(&payload, 0)) {
                            let _ = tx.send(None);
                        }
                    }
                    // A ping the client started (odd id) is echoed (spdystream `handlePingFrame`).
                    PING => {
                        let id = be32(&payload, 0);
                        if id % 2 == 1 {
                            let _ = out.send(Out::Ping(id));
                        }
                    }
                    GOAWAY => break 'conn,
                    // The header block still advances the shared compression stream; the kubelet reads no HEADERS.
                    SYN_REPLY | HEADERS => {
                        if inflate.block(payload.get(4..).unwrap_or_default()).is_err() {
                            break 'conn;
                        }
                    }
                    // spdystream has no flow control: SETTINGS and WINDOW_UPDATE are read and ignored
                    // (`frameHandler`'s default case), and it never sends them.
                    SETTINGS | WINDOW_UPDATE => {}
                    // An unknown control frame type is a read error that ends spdystream's `Serve` loop.
                    _ => break 'conn,
                },
            }
        }
    }
    for f in forwards {
        f.abort();
    }
    drop(out);
    let _ = write.await;
}

/// The kubelet's check of a new stream (`httpStreamReceived`): a `port` header parsed as a 16-bit unsigned number
/// above 0 and a `streamtype` of `data` or `error`. Returns them, or the kubelet's message.
fn check_stream(headers: &[(String, String)]) -> Result<(u16, &str), String> {
    let port = header(headers, "port");
    if port.is_empty() {
        return Err("\"port\" header is required".into());
    }
    let port: u16 = port
        .parse()
        .map_err(|e| format!("unable to parse {port:?} as a port: {e}"))?;
    if port < 1 {
        return Err(format!("port \"{port}\" must be > 0"));
    }
    match header(headers, "streamtype") {
        "" => Err("\"streamType\" header is required".into()),
        t @ ("data" | "error") => Ok((port, t)),
        t => Err(format!("invalid stream type {t:?}")),
    }
}

/// One forwarded connection (kubelet `httpStreamHandler.portForward` around containerd's copy loop): dial the port in
/// the pod, copy both ways until one direction ends, give the other [`LINGER`] to finish, then close the error
/// stream and the data stream. A failed dial writes the kubelet's message on the error stream first.
async fn forward(
    pod: Arc<PodTarget>,
    port: u16,
    data: u32,
    error: u32,
    mut from_client: FromClient,
    out: mpsc::UnboundedSender<Out>,
) {
    match pod.connect(port).await {
        Err(message) => {
            let _ = out.send(Out::Data(error, message.into_bytes(), false));
        }
        Ok(conn) => {
            let (mut r, mut w) = conn.into_split();
            let to_client = out.clone();
            let mut down = tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if to_client
                                .send(Out::Data(data, buf[..n].to_vec(), false))
                                .is_err()
                            {
                                break;
                            }
                        }
                    }
                }
            });
            // `io.Copy(conn, stream)` ends at the stream's end without half-closing the connection.
            let mut up = tokio::spawn(async move {
                while let Some(Some(chunk)) = from_client.recv().await {
                    if w.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                w
            });
            tokio::select! {
                _ = &mut down => { let _ = tokio::time::timeout(LINGER, &mut up).await; }
                _ = &mut up => { let _ = tokio::time::timeout(LINGER, &mut down).await; }
            }
            down.abort();
            up.abort();
        }
    }
    // `portForward`'s deferred closes: the error stream, then the data stream.
    let _ = out.send(Out::Data(error, Vec::new(), true));
    let _ = out.send(Out::Data(data, Vec::new(), true));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header blocks of kubectl 1.35's first two streams (error, then data, request 0, port 8080), as they came
    /// off the wire: one zlib stream, compressed against SPDY's dictionary by Go's `zlib.NewWriterLevelDict`.
    const KUBECTL_ERROR_STREAM: &[u8] = &[
        0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0x25, 0x3a, 0x48, 0xf9, 0x5b, 0x04, 0x4e, 0xea,
        0x16, 0x06, 0x16, 0x06, 0x0c, 0x0c, 0x0c, 0x9c, 0x45, 0x90, 0xf8, 0xca, 0x04, 0xa5, 0x63,
        0x46, 0x03, 0x70, 0x4a, 0x2c, 0x29, 0x4a, 0x4d, 0xcc, 0x85, 0x16, 0x36, 0xac, 0xa9, 0xa0,
        0xa8, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
    ];
    const KUBECTL_DATA_STREAM: &[u8] = &[
        0x82, 0x6a, 0x26, 0xa4, 0x18, 0x54, 0x32, 0x25, 0xa2, 0x5b, 0x02, 0x00, 0x00, 0x00, 0xff,
        0xff,
    ];

    fn sorted(mut h: Vec<(String, String)>) -> Vec<(String, String)> {
        h.sort();
        h
    }

    fn pairs(h: &[(&str, &str)]) -> Vec<(String, String)> {
        sorted(
            h.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn decodes_kubectl_header_blocks_compressed_against_the_dictionary() {
        assert_eq!(adler32(DICTIONARY), 0xe3c6a7c2);
        assert_eq!(
            &KUBECTL_ERROR_STREAM[..6],
            &[ZLIB_HEADER[0], ZLIB_HEADER[1], 0xe3, 0xc6, 0xa7, 0xc2]
        );
        let mut inflate = Inflater::new();
        let first = parse_headers(&inflate.block(KUBECTL_ERROR_STREAM).unwrap()).unwrap();
        assert_eq!(
            sorted(first),
            pairs(&[
                ("port", "8080"),
                ("requestid", "0"),
                ("streamtype", "error")
            ])
        );
        // The second block refers back into the first: the stream goes on across frames.
        let second = parse_headers(&inflate.block(KUBECTL_DATA_STREAM).unwrap()).unwrap();
        assert_eq!(
            sorted(second),
            pairs(&[("port", "8080"), ("requestid", "0"), ("streamtype", "data")])
        );
        // Without the dictionary's id the stream is refused.
        let mut other = KUBECTL_ERROR_STREAM.to_vec();
        other[5] ^= 1;
        assert!(Inflater::new().block(&other).is_err());
    }

    #[test]
    fn what_the_server_compresses_decodes_block_by_block() {
        assert_eq!((ZLIB_HEADER[0] as u16) << 8 | ZLIB_HEADER[1] as u16, 0x78f9);
        let (mut deflate, mut inflate) = (Deflater::new(), Inflater::new());
        for n in [0u32, 3, 0] {
            let mut plain = n.to_be_bytes().to_vec();
            for i in 0..n {
                let (k, v) = (format!("name{i}"), format!("value {i}"));
                plain.extend((k.len() as u32).to_be_bytes());
                plain.extend(k.as_bytes());
                plain.extend((v.len() as u32).to_be_bytes());
                plain.extend(v.as_bytes());
            }
            assert_eq!(inflate.block(&deflate.block(&plain)).unwrap(), plain);
        }
    }

    #[test]
    fn frames_are_taken_whole_from_a_byte_stream() {
        let mut wire = control(PING, 0, &7u32.to_be_bytes());
        wire.extend(Out::Data(3, b"abc".to_vec(), true).encode(&mut Deflater::new()));
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        // One byte at a time, as a WebSocket tunnel may deliver them (spdystream writes a frame in pieces).
        for b in wire {
            buf.push(b);
            frames.extend(next_frame(&mut buf));
        }
        assert_eq!(
            frames,
            vec![
                Frame::Control {
                    kind: PING,
                    flags: 0,
                    payload: 7u32.to_be_bytes().to_vec()
                },
                Frame::Data {
                    stream: 3,
                    flags: FLAG_FIN,
                    payload: b"abc".to_vec()
                },
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn streams_are_checked_like_the_kubelet() {
        let h = |p: &str, t: &str| pairs(&[("port", p), ("streamtype", t)]);
        assert_eq!(check_stream(&h("8080", "data")), Ok((8080, "data")));
        assert_eq!(check_stream(&h("1", "error")), Ok((1, "error")));
        assert_eq!(
            check_stream(&pairs(&[("streamtype", "data")])).unwrap_err(),
            "\"port\" header is required"
        );
        assert!(
            check_stream(&h("70000", "data"))
                .unwrap_err()
                .starts_with("unable to parse \"70000\" as a port")
        );
        assert_eq!(
            check_stream(&h("0", "data")).unwrap_err(),
            "port \"0\" must be > 0"
        );
        assert_eq!(
            check_stream(&pairs(&[("port", "80")])).unwrap_err(),
            "\"streamType\" header is required"
        );
        assert_eq!(
            check_stream(&h("80", "stdin")).unwrap_err(),
            "invalid stream type \"stdin\""
        );
        assert!(
            parse_headers(b"\0\0\0\x01\0\0\0\x01P\0\0\0\x00").is_err(),
            "names are lowercase"
        );
    }

    /// A SPDY client on a plain upgrade, speaking the frames by hand.
    struct Client {
        conn: std::net::TcpStream,
        deflate: Deflater,
        inflate: Inflater,
        buf: Vec<u8>,
    }

    impl Client {
        fn connect(server: &crate::KubeTestServer, pod: &str) -> Client {
            use std::io::{Read, Write};
            let mut conn = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let head = format!(
                "POST /api/v1/namespaces/demo/pods/{pod}/portforward HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
                 Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n"
            );
            conn.write_all(head.as_bytes()).unwrap();
            let mut buf = Vec::new();
            let mut byte = [0u8; 1];
            while !buf.ends_with(b"\r\n\r\n") {
                conn.read_exact(&mut byte).unwrap();
                buf.push(byte[0]);
            }
            assert!(
                buf.starts_with(b"HTTP/1.1 101"),
                "{}",
                String::from_utf8_lossy(&buf)
            );
            Client {
                conn,
                deflate: Deflater::new(),
                inflate: Inflater::new(),
                buf: Vec::new(),
            }
        }

        fn send(&mut self, frame: Vec<u8>) {
            use std::io::Write;
            self.conn.write_all(&frame).unwrap();
        }

        fn open(&mut self, id: u32, headers: &[(&str, &str)]) {
            let mut plain = (headers.len() as u32).to_be_bytes().to_vec();
            for (k, v) in headers {
                plain.extend((k.len() as u32).to_be_bytes());
                plain.extend(k.as_bytes());
                plain.extend((v.len() as u32).to_be_bytes());
                plain.extend(v.as_bytes());
            }
            let mut payload = id.to_be_bytes().to_vec();
            payload.extend([0, 0, 0, 0, 0, 0]);
            payload.extend(self.deflate.block(&plain));
            self.send(control(SYN_STREAM, 0, &payload));
        }

        /// Opens the error stream and the data stream of one request.
        fn open_pair(&mut self, error: u32, data: u32, port: &str, request: &str) {
            self.open(
                error,
                &[
                    ("port", port),
                    ("streamtype", "error"),
                    ("requestid", request),
                ],
            );
            self.open(
                data,
                &[
                    ("port", port),
                    ("streamtype", "data"),
                    ("requestid", request),
                ],
            );
        }

        /// The next frames are the replies accepting `ids`, in order.
        fn accepted(&mut self, ids: &[u32]) {
            for &id in ids {
                match self.next() {
                    Frame::Control {
                        kind: SYN_REPLY,
                        payload,
                        ..
                    } => assert_eq!(be32(&payload, 0), id),
                    other => panic!("{other:?} instead of the reply to {id}"),
                }
            }
        }

        /// The next frame, with a SYN_REPLY's header block decoded (and checked empty).
        fn next(&mut self) -> Frame {
            use std::io::Read;
            loop {
                if let Some(frame) = next_frame(&mut self.buf) {
                    if let Frame::Control {
                        kind: SYN_REPLY,
                        payload,
                        ..
                    } = &frame
                    {
                        let block = self.inflate.block(&payload[4..]).unwrap();
                        assert_eq!(parse_headers(&block).unwrap(), vec![]);
                    }
                    return frame;
                }
                let mut chunk = [0u8; 4096];
                let n = self.conn.read(&mut chunk).unwrap();
                assert!(n > 0, "the server closed the connection");
                self.buf.extend(&chunk[..n]);
            }
        }
    }

    fn reset(id: u32, status: u32) -> Frame {
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend(status.to_be_bytes());
        Frame::Control {
            kind: RST_STREAM,
            flags: 0,
            payload,
        }
    }

    fn data(stream: u32, payload: &[u8], fin: bool) -> Frame {
        Frame::Data {
            stream,
            flags: if fin { FLAG_FIN } else { 0 },
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn streams_are_refused_paired_forwarded_and_closed_like_the_kubelet() {
        use std::io::{Read, Write};
        let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut conn in echo.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let server = crate::KubeTestServer::builder()
            .backend_with_service(crate::Backend::parse(&format!("demo/web:8080={addr}")).unwrap())
            .start();
        let mut c = Client::connect(&server, "web-backend-8080");

        // No port header: the stream is reset (CANCEL), nothing else happens.
        c.open(1, &[("streamtype", "data")]);
        assert_eq!(c.next(), reset(1, CANCEL));
        // A ping the client started comes back.
        c.send(control(PING, 0, &5u32.to_be_bytes()));
        assert_eq!(
            c.next(),
            Frame::Control {
                kind: PING,
                flags: 0,
                payload: 5u32.to_be_bytes().to_vec()
            }
        );

        // An error and a data stream of one request: both accepted, then the data stream reaches the backend.
        c.open_pair(3, 5, "8080", "7");
        c.accepted(&[3, 5]);
        c.send(Out::Data(5, b"hello".to_vec(), false).encode(&mut Deflater::new()));
        assert_eq!(c.next(), data(5, b"hello", false));
        // The client's end of the data stream: after the runtime's linger, the error stream then the data stream end.
        let ended = std::time::Instant::now();
        c.send(Out::Data(5, Vec::new(), true).encode(&mut Deflater::new()));
        assert_eq!(c.next(), data(3, b"", true));
        assert_eq!(c.next(), data(5, b"", true));
        assert!(ended.elapsed() >= LINGER - Duration::from_millis(50));

        // A stream id below the last one's is a protocol error.
        c.open(1, &[("port", "8080"), ("streamtype", "data")]);
        assert_eq!(c.next(), reset(1, PROTOCOL_ERROR));
        // A second error stream for one request: the kubelet's message on the first.
        c.open(
            9,
            &[
                ("port", "8080"),
                ("streamtype", "error"),
                ("requestid", "9"),
            ],
        );
        c.open(
            11,
            &[
                ("port", "8080"),
                ("streamtype", "error"),
                ("requestid", "9"),
            ],
        );
        c.accepted(&[9, 11]);
        assert_eq!(
            c.next(),
            data(
                9,
                b"error processing stream for request 9: error stream already assigned",
                false
            )
        );
        // A port nothing listens on: the message on the error stream, then both streams end.
        c.open_pair(13, 15, "9999", "13");
        c.accepted(&[13, 15]);
        match c.next() {
            Frame::Data {
                stream: 13,
                payload,
                ..
            } => {
                let text = String::from_utf8(payload).unwrap();
                assert!(
                    text.starts_with("error forwarding port 9999 to pod web-backend-8080, uid "),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.next(), data(13, b"", true));
        assert_eq!(c.next(), data(15, b"", true));
    }
}
