//! The OpenAPI 3.1 document of the admin API, generated from the handlers and
//! the types they answer with, served at `/api/v1/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "synchost admin API",
        description = "Tenants, pipelines, runs, blocked plans, dead letters and plugin versions of a running \
                       `synchost run`. Every endpoint but /healthz and /readyz needs `Authorization: Bearer <token>`, \
                       the token being the content of `[admin] token_file`."
    ),
    paths(
        api::status, api::tenants, api::tenant, api::pipeline, api::sync, api::reconcile, api::pause, api::resume,
        api::dead_letters, api::retry_dead_letters, api::drop_dead_letters, api::plugins, api::rollback,
        api::runs, api::run, api::plan, api::approve, api::reload, api::healthz, api::readyz, api::metrics,
    ),
    modifiers(&BearerToken),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document, as served.
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.to_pretty_json().expect("the OpenAPI document serialises")
}
