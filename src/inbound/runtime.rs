//! Wiring to the Lambda Runtime API. lambda_http panics on an `isBase64Encoded` body that is not
//! base64; this adapter checks first and lets the handler answer 400 instead.

use crate::bridge::Bridge;
use crate::inbound::http::{BAD_BASE64_MARKER, handle};
use base64::Engine;
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Error, LambdaEvent, Request, Service, service_fn};
use std::sync::Arc;

/// Replaces a body that claims to be base64 but is not with an empty one and a marker header.
/// A marker header sent by the client is dropped first.
pub fn sanitize(payload: &mut LambdaRequest) {
    let (body, is_base64, headers) = match payload {
        LambdaRequest::ApiGatewayV2(r) => (&mut r.body, &mut r.is_base64_encoded, &mut r.headers),
        LambdaRequest::ApiGatewayV1(r) => {
            r.multi_value_headers.remove(BAD_BASE64_MARKER);
            (&mut r.body, &mut r.is_base64_encoded, &mut r.headers)
        }
        _ => return,
    };
    headers.remove(BAD_BASE64_MARKER);
    if *is_base64 {
        let ok = body
            .as_deref()
            .is_none_or(|b| base64::engine::general_purpose::STANDARD.decode(b).is_ok());
        if !ok {
            *body = None;
            *is_base64 = false;
            headers.insert(
                BAD_BASE64_MARKER,
                lambda_http::http::HeaderValue::from_static("1"),
            );
        }
    }
}

/// Converts one raw runtime event into the HTTP request the handler sees.
pub fn into_request(mut payload: LambdaRequest) -> Request {
    sanitize(&mut payload);
    payload.into()
}

/// Runs the bridge under the Lambda runtime until the process is stopped.
pub async fn run(bridge: Arc<Bridge>) -> Result<(), Error> {
    let handler = service_fn(move |mut event: LambdaEvent<LambdaRequest>| {
        sanitize(&mut event.payload);
        let bridge = Arc::clone(&bridge);
        let mut adapter = Adapter::from(service_fn(move |req: Request| {
            let bridge = Arc::clone(&bridge);
            async move { Ok::<_, Error>(handle(&bridge, req).await) }
        }));
        adapter.call(event)
    });
    lambda_http::lambda_runtime::run(handler).await
}
