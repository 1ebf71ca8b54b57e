//! [`ServiceBuilderExt`]: one `ServiceBuilder` method per ratelayer layer.

use tower::ServiceBuilder;
use tower::layer::util::Stack;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::target::TargetLayer;

/// Adds one method per ratelayer layer to tower's [`ServiceBuilder`], so a stack reads
/// in the recommended order, outermost first:
///
/// ```
/// # use std::convert::Infallible;
/// # use http::{Request, Response};
/// # use ratelayer::concurrency::ConcurrencyLayer;
/// # use ratelayer::core::{LimitState, ReplayBody};
/// # use ratelayer::{retry::BackoffRetryLayer, tier::TierDetectLayer, tpm::TpmLimitLayer};
/// use ratelayer::{Provider, ServiceBuilderExt, TargetLayer};
/// # use tower::{ServiceBuilder, ServiceExt};
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// # let client = tower::service_fn(|req: Request<ReplayBody>| async move {
/// #     let seen = format!("{} {:?}", req.uri(), req.headers()["authorization"]);
/// #     Ok::<_, Infallible>(Response::builder().header("x-seen", seen).body(String::new()).unwrap())
/// # });
/// let state = LimitState::new();
/// let svc = ServiceBuilder::new()
///     .sensitive_credentials()
///     .target(TargetLayer::new(Provider::OpenAi, "https://api.openai.com").unwrap().api_key("sk-1"))
///     .backoff_retry(BackoffRetryLayer::new(state.clone()))
///     .tier_detect(TierDetectLayer::new(state.clone()))
///     .tpm_limit(TpmLimitLayer::with_state(Default::default(), state.clone()).unwrap())
///     .concurrency(ConcurrencyLayer::new(Default::default()).unwrap().with_state(state))
///     .service(client); // answers with the URL and credential header it was sent
/// # let req = Request::post("/v1/chat/completions").body(ReplayBody::from("{}")).unwrap();
/// let resp = svc.oneshot(req).await.unwrap(); // a POST to /v1/chat/completions
/// assert_eq!(resp.headers()["x-seen"], "https://api.openai.com/v1/chat/completions Sensitive");
/// # }
/// ```
pub trait ServiceBuilderExt<L>: Sized {
    /// Marks the credential headers sensitive (see
    /// [`sensitive_credentials`](crate::sensitive_credentials)).
    fn sensitive_credentials(self) -> ServiceBuilder<Stack<SetSensitiveRequestHeadersLayer, L>>;

    /// Points requests at one provider (see [`TargetLayer`]).
    fn target(self, layer: TargetLayer) -> ServiceBuilder<Stack<TargetLayer, L>>;

    /// Retries rate-limited and transient failures with tier-aware backoff (see
    /// `ratelayer::retry::BackoffRetryLayer`).
    #[cfg(feature = "retry")]
    fn backoff_retry(
        self,
        layer: ratelayer_retry::BackoffRetryLayer,
    ) -> ServiceBuilder<Stack<ratelayer_retry::BackoffRetryLayer, L>>;

    /// Learns the tier and limits from every response's headers (see
    /// `ratelayer::tier::TierDetectLayer`).
    #[cfg(feature = "tier")]
    fn tier_detect(
        self,
        layer: ratelayer_tier::TierDetectLayer,
    ) -> ServiceBuilder<Stack<ratelayer_tier::TierDetectLayer, L>>;

    /// Reserves each attempt's tokens in the provider's token budgets (see
    /// `ratelayer::tpm::TpmLimitLayer`).
    #[cfg(feature = "tpm")]
    fn tpm_limit(
        self,
        layer: ratelayer_tpm::TpmLimitLayer,
    ) -> ServiceBuilder<Stack<ratelayer_tpm::TpmLimitLayer, L>>;

    /// Holds a per-provider concurrency permit and reservoir slot around the real
    /// exchange (see `ratelayer::concurrency::ConcurrencyLayer`).
    #[cfg(feature = "concurrency")]
    fn concurrency(
        self,
        layer: ratelayer_concurrency::ConcurrencyLayer,
    ) -> ServiceBuilder<Stack<ratelayer_concurrency::ConcurrencyLayer, L>>;

    /// Puts a fallback chain in front, the wrapped service being its primary provider
    /// (see `ratelayer::fallback::FallbackLayer`).
    #[cfg(feature = "fallback")]
    fn fallback<B, ResB>(
        self,
        layer: ratelayer_fallback::FallbackLayer<B, ResB>,
    ) -> ServiceBuilder<Stack<ratelayer_fallback::FallbackLayer<B, ResB>, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn sensitive_credentials(self) -> ServiceBuilder<Stack<SetSensitiveRequestHeadersLayer, L>> {
        self.layer(crate::sensitive_credentials())
    }

    fn target(self, layer: TargetLayer) -> ServiceBuilder<Stack<TargetLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "retry")]
    fn backoff_retry(
        self,
        layer: ratelayer_retry::BackoffRetryLayer,
    ) -> ServiceBuilder<Stack<ratelayer_retry::BackoffRetryLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "tier")]
    fn tier_detect(
        self,
        layer: ratelayer_tier::TierDetectLayer,
    ) -> ServiceBuilder<Stack<ratelayer_tier::TierDetectLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "tpm")]
    fn tpm_limit(
        self,
        layer: ratelayer_tpm::TpmLimitLayer,
    ) -> ServiceBuilder<Stack<ratelayer_tpm::TpmLimitLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "concurrency")]
    fn concurrency(
        self,
        layer: ratelayer_concurrency::ConcurrencyLayer,
    ) -> ServiceBuilder<Stack<ratelayer_concurrency::ConcurrencyLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "fallback")]
    fn fallback<B, ResB>(
        self,
        layer: ratelayer_fallback::FallbackLayer<B, ResB>,
    ) -> ServiceBuilder<Stack<ratelayer_fallback::FallbackLayer<B, ResB>, L>> {
        self.layer(layer)
    }
}
