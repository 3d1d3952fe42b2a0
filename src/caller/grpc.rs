//! gRPC branch calls (contract §3.4): `host:port/package.Service/Method`
//! (or `grpc://`, `grpcs://` over TLS),
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
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::domain::{GrpcTarget, Outcome, TraceContext, Trans};

/// Channels kept at most; beyond, the cache is cleared (channels
/// reconnect lazily).
const MAX_CHANNELS: usize = 1024;

/// One channel per target, each multiplexing calls over HTTP/2 with
/// keep-alive; `grpcs://` targets over TLS, verified against the system's
/// roots and `branch.grpc_ca_file`.
pub(super) struct Channels {
    plain: Mutex<HashMap<String, Channel>>,
    tls: Mutex<HashMap<String, Channel>>,
    tls_config: ClientTlsConfig,
}

impl Channels {
    /// Channels whose TLS calls also trust the PEM certificates in
    /// `ca_file` (none when empty).
    pub(super) fn new(ca_file: &str) -> Result<Self, String> {
        let mut tls_config = ClientTlsConfig::new().with_native_roots();
        if !ca_file.is_empty() {
            let pem = std::fs::read(ca_file)
                .map_err(|e| format!("branch.grpc_ca_file {ca_file}: {e}"))?;
            tls_config = tls_config.ca_certificate(Certificate::from_pem(pem));
        }
        Ok(Self {
            plain: Mutex::default(),
            tls: Mutex::default(),
            tls_config,
        })
    }

    fn channel(&self, target: &GrpcTarget) -> Result<Channel, String> {
        let cache = if target.tls { &self.tls } else { &self.plain };
        let mut by_target = cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = by_target.get(&target.authority) {
            return Ok(c.clone());
        }
        if by_target.len() >= MAX_CHANNELS {
            by_target.clear();
        }
        let authority = &target.authority;
        let scheme = if target.tls { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{authority}"))
            .map_err(|e| format!("gRPC target {authority}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if target.tls {
            let tls = self.tls_config.clone().domain_name(target.host());
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("gRPC target {authority}: {e}"))?;
        }
        let channel = endpoint.connect_lazy();
        by_target.insert(authority.clone(), channel.clone());
        Ok(channel)
    }

    /// Calls `target` for branch `branch_id`/`op` of `t` with `body` as the
    /// message, within `timeout`, sending `trace` as metadata.
    pub(super) async fn call(
        &self,
        t: &Trans,
        target: &GrpcTarget,
        (branch_id, op): (&str, &str),
        body: Vec<u8>,
        timeout: Duration,
        trace: Option<&TraceContext>,
    ) -> Outcome {
        let channel = match self.channel(target) {
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
        for (name, value) in dtm.into_iter().chain(super::branch_headers(t, trace)) {
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
