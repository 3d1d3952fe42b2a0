//! gRPC branch calls (contract §3.4): `host:port/package.Service/Method`,
//! the stored payload bytes sent unchanged as the message through a
//! pass-through codec (dtx needs no business proto), dtm's `dtm-*`
//! metadata, and the reply read by its status alone (contract §2.3).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::domain::{Outcome, Trans};

/// Channels kept at most; beyond, the cache is cleared (channels
/// reconnect lazily).
const MAX_CHANNELS: usize = 1024;

/// One channel per target, each multiplexing calls over HTTP/2 with
/// keep-alive.
#[derive(Default)]
pub(super) struct Channels {
    by_target: Mutex<HashMap<String, Channel>>,
}

/// What a gRPC branch URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// `host:port`
    pub(super) authority: String,
    /// `/package.Service/Method`
    pub(super) path: String,
}

/// Splits `host:port/package.Service/Method` at its first `/`, as dtm's
/// default driver does.
pub(super) fn target(url: &str) -> Result<Target, String> {
    let (authority, method) = url
        .split_once('/')
        .ok_or_else(|| format!("gRPC branch {url} names no method"))?;
    if authority.is_empty() || !method.contains('/') {
        return Err(format!(
            "gRPC branch {url} must be host:port/package.Service/Method"
        ));
    }
    Ok(Target {
        authority: authority.to_ascii_lowercase(),
        path: format!("/{method}"),
    })
}

impl Channels {
    fn channel(&self, authority: &str) -> Result<Channel, String> {
        let mut by_target = self.by_target.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = by_target.get(authority) {
            return Ok(c.clone());
        }
        if by_target.len() >= MAX_CHANNELS {
            by_target.clear();
        }
        let channel = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| format!("gRPC target {authority}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        by_target.insert(authority.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Calls `target` for branch `branch_id`/`op` of `t` with `body` as the
    /// message, within `timeout`.
    pub(super) async fn call(
        &self,
        t: &Trans,
        target: &Target,
        branch_id: &str,
        op: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Outcome {
        let channel = match self.channel(&target.authority) {
            Ok(c) => c,
            Err(e) => return Outcome::Unknown(e),
        };
        let Ok(path) = PathAndQuery::try_from(target.path.as_str()) else {
            return Outcome::Unknown(format!("bad gRPC method {}", target.path));
        };
        let mut request = tonic::Request::new(body);
        request.set_timeout(timeout);
        let meta = request.metadata_mut();
        let dtm = [
            ("dtm-gid", t.gid.as_str()),
            ("dtm-trans_type", t.kind.as_str()),
            ("dtm-branch_id", branch_id),
            ("dtm-op", op),
            ("dtm-dtm", ""),
        ];
        let headers = t
            .opts
            .branch_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()));
        for (name, value) in dtm.into_iter().chain(headers) {
            // validated at creation; a pair that still does not parse is skipped
            if let (Ok(k), Ok(v)) = (
                MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()),
                MetadataValue::try_from(value),
            ) {
                meta.insert(k, v);
            }
        }
        let mut grpc = tonic::client::Grpc::new(channel);
        if let Err(e) = grpc.ready().await {
            return Outcome::Unknown(format!("gRPC target {}: {e}", target.authority));
        }
        match grpc.unary(request, path, Raw).await {
            Ok(_) => Outcome::Succeeded,
            Err(status) => classify(&status),
        }
    }
}

/// A gRPC reply status as a branch outcome (contract §2.3).
pub(super) fn classify(status: &Status) -> Outcome {
    match status.code() {
        Code::Ok => Outcome::Succeeded,
        Code::Aborted if status.message() == "ONGOING" => Outcome::Ongoing,
        Code::Aborted => Outcome::Failed(format!("gRPC ABORTED: {}", status.message())),
        Code::FailedPrecondition => Outcome::Ongoing,
        code => Outcome::Unknown(format!("gRPC {code:?}: {}", status.message())),
    }
}

/// The pass-through codec: a message is the bytes given, a reply the bytes
/// received.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_at_the_first_slash() {
        assert_eq!(
            target("Localhost:5000/busi.Busi/TransIn").unwrap(),
            Target {
                authority: "localhost:5000".into(),
                path: "/busi.Busi/TransIn".into(),
            }
        );
        assert!(target("localhost:5000").is_err());
        assert!(target("/busi.Busi/TransIn").is_err());
        assert!(target("localhost:5000/TransIn").is_err());
    }

    #[test]
    fn replies_are_read_by_status_as_the_contract_says() {
        let of = |code, msg: &str| classify(&Status::new(code, msg));
        assert_eq!(of(Code::Ok, ""), Outcome::Succeeded);
        assert!(
            matches!(of(Code::Aborted, "no money"), Outcome::Failed(m) if m.contains("no money"))
        );
        assert_eq!(of(Code::Aborted, "ONGOING"), Outcome::Ongoing);
        assert_eq!(of(Code::FailedPrecondition, "later"), Outcome::Ongoing);
        for code in [
            Code::Unavailable,
            Code::Internal,
            Code::Unknown,
            Code::DeadlineExceeded,
        ] {
            assert!(matches!(of(code, "x"), Outcome::Unknown(_)), "{code:?}");
        }
    }
}
