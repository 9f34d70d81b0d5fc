//! One layer under every gRPC service: names the medic method a request
//! calls (from the generated services' descriptor, so no method name is
//! typed twice), times it in `medic_rpc_duration_seconds`, runs it in a
//! `call` span naming the method, and answers a request body that is not
//! the method's protobuf message with `INVALID_ARGUMENT`, like every other
//! malformed input (tonic's codec says `INTERNAL`, which would page someone
//! for a caller's mistake).

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prost::Message;
use tonic::codegen::http;
use tracing::Instrument;

use crate::metrics::Metrics;

/// The medic method a request calls, as metrics, logs and the audit
/// history name it: `Service/Method` (`Admin/Pause`,
/// `Remediation/Heartbeat`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Method(Arc<str>);

impl Method {
    /// A request no layer named (a service called without [`CallLayer`]).
    pub fn unknown() -> Self {
        Self(Arc::from("unknown"))
    }

    /// A method named `Service/Method` by its caller (an in-process call
    /// that no layer names: [`super::DirectAgents`]).
    pub(crate) fn named(name: &str) -> Self {
        Self(Arc::from(name))
    }

    /// `Service/Method`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every method of the `medic.v1` services, by request path
/// (`/medic.v1.Admin/Pause`).
fn methods() -> HashMap<String, Method> {
    const PACKAGE: &str = "medic.v1";
    let mut methods = HashMap::new();
    let Ok(set) = prost_types::FileDescriptorSet::decode(medic_proto::FILE_DESCRIPTOR_SET) else {
        return methods;
    };
    for file in set.file.iter().filter(|f| f.package() == PACKAGE) {
        for service in &file.service {
            for method in &service.method {
                let name = format!("{}/{}", service.name(), method.name());
                methods.insert(
                    format!("/{PACKAGE}.{name}"),
                    Method(Arc::from(name.as_str())),
                );
            }
        }
    }
    methods
}

/// See the module's documentation. Calls to other services (health,
/// reflection) and to paths no service has pass through untouched, so a
/// caller cannot add label values by calling made-up methods.
#[derive(Clone, Debug)]
pub struct CallLayer {
    methods: Arc<HashMap<String, Method>>,
    metrics: Arc<Metrics>,
}

impl CallLayer {
    /// Times medic calls into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            methods: Arc::new(methods()),
            metrics,
        }
    }
}

impl<S> tower_layer::Layer<S> for CallLayer {
    type Service = Timed<S>;

    fn layer(&self, inner: S) -> Timed<S> {
        Timed {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`CallLayer`].
#[derive(Clone, Debug)]
pub struct Timed<S> {
    inner: S,
    layer: CallLayer,
}

impl<S, B, RB> tonic::codegen::Service<http::Request<B>> for Timed<S>
where
    S: tonic::codegen::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tonic::codegen::BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(method) = self.layer.methods.get(req.uri().path()).cloned() else {
            return Box::pin(self.inner.call(req));
        };
        req.extensions_mut().insert(method.clone());
        let metrics = self.layer.metrics.clone();
        let started = Instant::now();
        // Every log line of the call carries its method (at debug level:
        // nothing is recorded at the default level).
        let span = tracing::debug_span!("call", method = %method);
        let call = self.inner.call(req);
        Box::pin(
            async move {
                let mut response = call.await;
                metrics.rpc(method.as_str(), started.elapsed().as_secs_f64());
                if let Ok(r) = &mut response {
                    undecodable_is_invalid_argument(r.headers_mut());
                }
                response
            }
            .instrument(span),
        )
    }
}

/// Rewrites tonic's answer to a request body its codec could not decode
/// (`INTERNAL`, "failed to decode Protobuf message: ...", sent as
/// trailers-only headers before any handler ran) to `INVALID_ARGUMENT`,
/// keeping the message that names the field.
fn undecodable_is_invalid_argument(headers: &mut http::HeaderMap) {
    const INTERNAL: &str = "13";
    // As tonic percent-encodes it.
    const DECODE_FAILED: &str = "failed%20to%20decode%20Protobuf%20message";
    let internal = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == INTERNAL.as_bytes());
    let undecodable = headers
        .get("grpc-message")
        .is_some_and(|v| v.as_bytes().starts_with(DECODE_FAILED.as_bytes()));
    if internal && undecodable {
        let code = (tonic::Code::InvalidArgument as i32).to_string();
        if let Ok(v) = http::HeaderValue::from_str(&code) {
            headers.insert("grpc-status", v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_both_services_is_named_from_the_descriptor() {
        let m = methods();
        assert_eq!(
            m.get("/medic.v1.Admin/Pause").map(Method::as_str),
            Some("Admin/Pause")
        );
        assert_eq!(
            m.get("/medic.v1.Remediation/Heartbeat").map(Method::as_str),
            Some("Remediation/Heartbeat")
        );
        assert!(!m.contains_key("/grpc.health.v1.Health/Check"));
        for (path, method) in &m {
            assert_eq!(path, &format!("/medic.v1.{method}"));
        }
    }
}
