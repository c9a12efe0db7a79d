//! The connection every networked verb uses: the first endpoint that answers, TLS from
//! etcdctl's flags, a token from `--user` when the cluster has authentication on, and the
//! command timeout on every call.

use std::time::Duration;

use oxcd::proto::etcdserverpb::auth_client::AuthClient;
use oxcd::proto::etcdserverpb::cluster_client::ClusterClient;
use oxcd::proto::etcdserverpb::kv_client::KvClient;
use oxcd::proto::etcdserverpb::lease_client::LeaseClient;
use oxcd::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use oxcd::proto::etcdserverpb::watch_client::WatchClient;
use oxcd::proto::etcdserverpb::{
    watch_request, AuthenticateRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::{Failure, Global};

/// What keeps a watch stream open.
pub type WatchSender = tokio::sync::mpsc::Sender<WatchRequest>;

/// A connected client.
#[derive(Clone)]
pub struct Client {
    pub channel: Channel,
    token: Option<MetadataValue<Ascii>>,
    pub command_timeout: Duration,
}

/// `host:port` of an endpoint given as a URL or as an address.
pub fn address(endpoint: &str) -> String {
    endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

impl Client {
    /// Connects to the first of `--endpoints` that answers within the dial timeout.
    pub async fn connect(global: &Global) -> Result<Client, Failure> {
        let endpoints = global.endpoints();
        let mut last = None;
        for endpoint in &endpoints {
            match Client::connect_to(global, endpoint).await {
                Ok(client) => return Ok(client),
                Err(failure) => last = Some(failure),
            }
        }
        Err(last.unwrap_or_else(|| Failure::bad_args("no endpoints given")))
    }

    /// Connects to `endpoint` alone.
    pub async fn connect_to(global: &Global, endpoint: &str) -> Result<Client, Failure> {
        let dialer = oxcd::net::dial::Dialer::from_flags(
            global.cacert.clone(),
            global.cert.clone(),
            global.key.clone(),
            global.insecure_skip_tls_verify,
        )
        .map_err(Failure::bad_args)?;
        let dial_timeout =
            crate::snapshot::duration(&global.dial_timeout).map_err(Failure::bad_args)?;
        let command_timeout =
            crate::snapshot::duration(&global.command_timeout).map_err(Failure::bad_args)?;
        let channel =
            match tokio::time::timeout(dial_timeout, dialer.connect(&address(endpoint))).await {
                Ok(Ok(channel)) => channel,
                Ok(Err(reason)) => {
                    tracing::debug!(%reason, "dial failed");
                    return Err(Failure::error("context deadline exceeded"));
                }
                Err(_) => return Err(Failure::error("context deadline exceeded")),
            };
        let mut client = Client {
            channel,
            token: None,
            command_timeout,
        };
        if let Some(user) = &global.user {
            let (name, password) = match (user.split_once(':'), &global.password) {
                (_, Some(password)) => (user.as_str(), password.clone()),
                (Some((name, password)), None) => (name, password.to_string()),
                (None, None) => (user.as_str(), read_password()?),
            };
            let token = AuthClient::new(client.channel.clone())
                .authenticate(client.request(AuthenticateRequest {
                    name: name.to_string(),
                    password,
                }))
                .await
                .map_err(Failure::status)?
                .into_inner()
                .token;
            client.token = Some(
                token
                    .parse()
                    .map_err(|_| Failure::error("the server's token is not ASCII"))?,
            );
        }
        Ok(client)
    }

    /// `message` as a request with the token and the command timeout.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.command_timeout);
        self.authorize(&mut request);
        request
    }

    /// `message` as a request with the token and no deadline (streams).
    pub fn stream_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.authorize(&mut request);
        request
    }

    fn authorize<T>(&self, request: &mut tonic::Request<T>) {
        if let Some(token) = &self.token {
            request.metadata_mut().insert("token", token.clone());
        }
    }

    /// A watch stream opened with `create`; it stays open while the sender is held.
    pub async fn open_watch(
        &self,
        create: WatchCreateRequest,
    ) -> Result<(WatchSender, tonic::Streaming<WatchResponse>), Failure> {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let request = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
        };
        sender
            .send(request)
            .await
            .map_err(|_| Failure::error("watch stream closed"))?;
        let stream = self
            .watch()
            .watch(self.stream_request(oxcd::server::ReceiverStream(receiver)))
            .await
            .map_err(Failure::status)?
            .into_inner();
        Ok((sender, stream))
    }

    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone())
    }
    pub fn watch(&self) -> WatchClient<Channel> {
        WatchClient::new(self.channel.clone())
    }
    pub fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel.clone())
    }
    pub fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel.clone())
    }
    pub fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel.clone())
    }
    pub fn auth(&self) -> AuthClient<Channel> {
        AuthClient::new(self.channel.clone())
    }
}

/// The password of `--user NAME` without one, read from the terminal (or stdin).
fn read_password() -> Result<String, Failure> {
    use std::io::Write as _;
    eprint!("Password: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|error| Failure::error(error.to_string()))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
