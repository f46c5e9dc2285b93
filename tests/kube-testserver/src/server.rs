//! The hyper HTTP/1.1 server loop (plain or TLS), bearer-token authentication, and the response
//! body type (a full body or a watch stream).

use crate::api::{self, Ctx, Reply, Shared};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// A response body: all at once, or streamed from a channel (watches).
pub enum Body {
    Full(Option<Bytes>),
    Stream(mpsc::UnboundedReceiver<Bytes>),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }
}

/// The TLS acceptor for the chain and key of [`crate::Tls`].
pub(crate) fn acceptor(tls: &crate::Tls) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {e}"))
    };
    let mut chain = Vec::new();
    for file in &tls.chain {
        let certs = CertificateDer::pem_file_iter(file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(&file.display().to_string(), &e))?;
        chain.extend(certs);
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| bad(&tls.key.display().to_string(), &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS versions", &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad("TLS certificate", &e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections (TLS ones with `tls`) until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                // A failed handshake (a client that does not trust the CA) just closes.
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        connection(stream, shared).await;
                    }
                }
                None => connection(stream, shared).await,
            }
        });
    }
}

async fn connection<S>(stream: S, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| handle(Arc::clone(&shared), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        // `pods/portforward` upgrades the connection (WebSocket or SPDY/3.1).
        .with_upgrades()
        .await;
}

/// Whether the request authenticates: with configured tokens, only `Authorization: Bearer
/// <token>` with one of them does. Upstream (kubernetes `staging/src/k8s.io/apiserver/pkg/endpoints/filters/
/// authentication.go`, `WithAuthentication` + `Unauthorized`): a request that fails
/// authentication gets `apierrors.NewUnauthorized("Unauthorized")`, on every path, with no
/// `WWW-Authenticate` header.
///
/// Tokens the server issued itself (TokenRequest, token Secrets, the kubelet's projected
/// service-account tokens) authenticate too, as the real server's service-account token
/// authenticator accepts the tokens it signed (`pkg/serviceaccount/jwt.go`).
fn authenticated(shared: &Shared, authorization: &str) -> bool {
    if shared.tokens.is_empty() {
        return true;
    }
    let Some(given) = authorization.strip_prefix("Bearer ").map(str::trim) else {
        return false;
    };
    shared.tokens.iter().any(|t| t == given) || shared.lock().issued_tokens.contains(given)
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let _counted = api::InFlight::enter(&shared);
    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    if let Some((ns, name)) = crate::portforward::target(req.uri().path()) {
        let authorization = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // An unauthenticated port-forward goes on below, to the 401 every request gets.
        if authenticated(&shared, authorization) {
            return Ok(crate::portforward::handle(&shared, req, &ns, &name));
        }
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let ctx = Ctx {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        query: api::parse_query(parts.uri.query().unwrap_or_default()),
        content_type: header("content-type"),
        accept: header("accept"),
        if_none_match: header("if-none-match"),
        user_agent: header("user-agent"),
        body,
    };
    let reply = if authenticated(&shared, &header("authorization")) {
        api::route(&shared, &ctx)
    } else {
        Err(crate::util::ApiError::unauthorized())
    };
    crate::controllers::spawn_followups(&shared);
    let json = |v: &serde_json::Value| Bytes::from(serde_json::to_vec(v).unwrap_or_default());
    let content_type = |t: &str| vec![("content-type", t.to_string())];
    let (status, headers, body) = match reply {
        Ok(Reply::Json(code, v)) => (
            code,
            content_type("application/json"),
            Body::Full(Some(json(&v))),
        ),
        Ok(Reply::Text(code, ctype, text)) => (
            code,
            content_type(ctype),
            Body::Full(Some(Bytes::from(text))),
        ),
        Ok(Reply::Raw(code, headers, body)) => (code, headers, Body::Full(Some(Bytes::from(body)))),
        Ok(Reply::Stream(rx)) => (200, content_type("application/json"), Body::Stream(rx)),
        Err(e) => (
            e.code,
            content_type("application/json"),
            Body::Full(Some(json(&e.to_status()))),
        ),
    };
    shared.lock().requests.push(api::record(&ctx, status));
    let mut resp = Response::builder().status(status);
    for (name, value) in headers {
        resp = resp.header(name, value);
    }
    if matches!(body, Body::Stream(_)) {
        resp = resp.header("transfer-encoding", "chunked");
    }
    Ok(resp.body(body).expect("valid response"))
}
