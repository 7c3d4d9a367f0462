//! Authentication by the connection's first frame (`?auth=message`).
//!
//! A browser cannot read the status of a refused upgrade, so an SDK cannot tell a bad
//! token from a network failure, and a token in the URL ends up in proxy access logs.
//! A client that opts in upgrades without a token and sends `{"type":"auth",...}`
//! first. Until then the connection holds nothing but its place in the node's
//! connection count; a refusal is one `error` frame carrying the code an HTTP refusal
//! would carry, then a close with a documented 4xxx code, and nothing else happens.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use super::{close_lingering, read_error_flow, Flow};
use crate::auth::Identity;
use crate::connection::Membership;
use crate::hub::Registration;
use crate::node::Node;
use crate::protocol::{ClientMessage, ServerMessage};

/// Close code: the token was refused (the `error` frame names why, as `token_*`).
pub const TOKEN_REFUSED: u16 = 4001;
/// Close code: no `auth` frame within the handshake timeout.
pub const AUTH_TIMEOUT: u16 = 4002;
/// Close code: the first frame was not a well-formed `auth` frame, or an `auth` frame
/// came on a connection that is already authenticated.
pub const BAD_AUTH: u16 = 4003;
/// The `error` code sent with [`BAD_AUTH`].
pub const BAD_AUTH_CODE: &str = "bad_auth";
/// The `error` code sent with [`AUTH_TIMEOUT`].
pub const AUTH_TIMEOUT_CODE: &str = "auth_timeout";

/// A connection that authenticated with its first frame, registered and subscribed to
/// its auto-subscribe channels; `auth_success` has been sent.
pub struct Opened {
    /// Who the client is.
    pub identity: Identity,
    /// What the connection holds on the node.
    pub membership: Membership,
    /// Its receiving end in the hub.
    pub registration: Registration,
}

/// Why the handshake ended without a session.
enum Failure {
    /// The client left, or the socket broke: nothing to say.
    Gone,
    /// A refusal: the `error` frame's code and text, then the close code and reason.
    Refuse {
        code: &'static str,
        message: String,
        close: u16,
        reason: &'static str,
    },
}

/// Reads the client's `auth` frame until `deadline`, verifies its token and opens the
/// connection; `None` when the client was refused (and told so) or went away.
pub async fn authenticate<S>(
    node: &Arc<Node>,
    ws: &mut WebSocketStream<S>,
    deadline: Instant,
) -> Option<Opened>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match open(node, ws, deadline).await {
        Ok(opened) => Some(opened),
        Err(Failure::Gone) => None,
        Err(Failure::Refuse {
            code,
            message,
            close,
            reason,
        }) => {
            node.metrics.reject(code);
            tracing::debug!(code, %message, "refused first-frame authentication");
            let frame = ServerMessage::AuthRefused {
                code,
                message: &message,
            }
            .to_text();
            if let Ok(Ok(())) = tokio::time::timeout(
                node.config.write_timeout,
                futures_util::SinkExt::send(ws, WsMessage::Text(frame)),
            )
            .await
            {
                close_lingering(ws, close, reason).await;
            }
            None
        }
    }
}

async fn open<S>(
    node: &Arc<Node>,
    ws: &mut WebSocketStream<S>,
    deadline: Instant,
) -> Result<Opened, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let token = read_token(ws, deadline).await?;
    let identity = node.verify_token(&token).map_err(|e| Failure::Refuse {
        code: e.code(),
        message: e.to_string(),
        close: TOKEN_REFUSED,
        reason: "token refused",
    })?;
    let (membership, registration) =
        Membership::open(node.clone(), &identity)
            .await
            .map_err(|refused| Failure::Refuse {
                code: refused.code(),
                message: refused.to_string(),
                close: refused.close_code(),
                reason: "connection refused",
            })?;
    let success = ServerMessage::AuthSuccess {
        user_id: identity.user.as_deref(),
    }
    .to_text();
    // Pushes already queued for the connection wait in its registration until the
    // session starts, so `auth_success` is always the first frame the client reads.
    match tokio::time::timeout(
        node.config.write_timeout,
        futures_util::SinkExt::send(ws, WsMessage::Text(success)),
    )
    .await
    {
        Ok(Ok(())) => Ok(Opened {
            identity,
            membership,
            registration,
        }),
        _ => Err(Failure::Gone),
    }
}

/// The token of the first data frame, which must be `{"type":"auth","token":"..."}`.
async fn read_token<S>(ws: &mut WebSocketStream<S>, deadline: Instant) -> Result<String, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let bad = |message: String| Failure::Refuse {
        code: BAD_AUTH_CODE,
        message,
        close: BAD_AUTH,
        reason: "expected an auth frame",
    };
    loop {
        let frame = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => {
                return Err(Failure::Refuse {
                    code: AUTH_TIMEOUT_CODE,
                    message: "no auth frame within the handshake timeout".into(),
                    close: AUTH_TIMEOUT,
                    reason: "auth timeout",
                })
            }
            Ok(None) => return Err(Failure::Gone),
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(error))) => {
                return Err(match read_error_flow(&error) {
                    Flow::Close(_, reason) => bad(format!("unreadable first frame: {reason}")),
                    _ => Failure::Gone,
                })
            }
        };
        match frame {
            WsMessage::Text(text) => {
                return match ClientMessage::parse(text.as_str()) {
                    Ok(ClientMessage::Auth { token }) => Ok(token),
                    Ok(_) => Err(bad(
                        "the first frame must be {\"type\":\"auth\",\"token\":\"...\"} on a connection opened with auth=message".into(),
                    )),
                    Err(e) => Err(bad(format!("bad auth frame: {e}"))),
                };
            }
            WsMessage::Binary(_) => {
                return Err(bad("the auth frame must be a JSON text frame".into()))
            }
            // tungstenite answers pings itself; a close is answered and ends the stream.
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Close(_) | WsMessage::Frame(_) => {
            }
        }
    }
}
