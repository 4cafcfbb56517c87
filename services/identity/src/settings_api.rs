//! gRPC handlers of `SettingsService`: proto in, one domain call ([`crate::settings`]), proto out.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trellis_kit::RequestContext;
use trellis_kit::json::to_proto;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::settings_service_server::SettingsService;

use crate::accounts::Identity;
use crate::events::timestamp;
use crate::settings::{Effective, Source};
use crate::settings_store::Stored;

fn setting_to_proto(s: &Stored) -> pb::Setting {
    let scope = if s.scope == "user" { pb::SettingScope::User } else { pb::SettingScope::Org };
    pb::Setting {
        scope: scope.into(),
        scope_id: s.scope_id.to_string(),
        namespace: s.namespace.clone(),
        key: s.key.clone(),
        value: Some(to_proto(&s.value)),
        updated_by: s.updated_by.map(|u| u.to_string()).unwrap_or_default(),
        updated_at: Some(timestamp(s.updated_at)),
    }
}

fn effective_to_proto(e: &Effective) -> pb::EffectiveSetting {
    let source = match e.source {
        Source::User => pb::SettingSource::User,
        Source::Org => pb::SettingSource::Org,
        Source::Default => pb::SettingSource::Default,
    };
    pb::EffectiveSetting {
        namespace: e.namespace.clone(),
        key: e.key.clone(),
        value: Some(to_proto(&e.value)),
        source: source.into(),
    }
}

/// `trellis.identity.v1.SettingsService`.
#[derive(Debug, Clone)]
pub struct SettingsApi {
    identity: Arc<Identity>,
}

impl SettingsApi {
    /// Handlers over the shared state.
    pub fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }
}

#[tonic::async_trait]
impl SettingsService for SettingsApi {
    async fn list_settings(
        &self,
        request: Request<pb::ListSettingsRequest>,
    ) -> Result<Response<pb::ListSettingsResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let settings = self.identity.list_settings(ctx, request.get_ref()).await?;
        Ok(Response::new(pb::ListSettingsResponse { settings: settings.iter().map(setting_to_proto).collect() }))
    }

    async fn get_effective_settings(
        &self,
        request: Request<pb::GetEffectiveSettingsRequest>,
    ) -> Result<Response<pb::GetEffectiveSettingsResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let settings = self.identity.effective_settings(ctx, &request.get_ref().namespace).await?;
        Ok(Response::new(pb::GetEffectiveSettingsResponse {
            settings: settings.iter().map(effective_to_proto).collect(),
        }))
    }

    async fn set_setting(
        &self,
        request: Request<pb::SetSettingRequest>,
    ) -> Result<Response<pb::SetSettingResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let stored = self.identity.set_setting(ctx, request.get_ref()).await?;
        Ok(Response::new(pb::SetSettingResponse { setting: Some(setting_to_proto(&stored)) }))
    }

    async fn delete_setting(&self, request: Request<pb::DeleteSettingRequest>) -> Result<Response<()>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        self.identity.delete_setting(ctx, request.get_ref()).await?;
        Ok(Response::new(()))
    }

    async fn register_setting_definitions(
        &self,
        request: Request<pb::RegisterSettingDefinitionsRequest>,
    ) -> Result<Response<pb::RegisterSettingDefinitionsResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let changed = self.identity.register_setting_definitions(ctx, request.get_ref()).await?;
        Ok(Response::new(pb::RegisterSettingDefinitionsResponse {
            changed: i32::try_from(changed).unwrap_or(i32::MAX),
        }))
    }
}
