//! oxbench: load over the etcd v3 gRPC API, for oxcd or etcd alike.
//!
//! ```text
//! oxbench --endpoint 127.0.0.1:2379 --clients 32 --total 20000 put
//! oxbench --endpoint 127.0.0.1:2379 --clients 32 --total 20000 range
//! oxbench --endpoint 127.0.0.1:2379 --clients 32 --total 20000 txn-put
//! oxbench --endpoint 127.0.0.1:2379 --total 2000 watch-latency
//! oxbench --endpoint 127.0.0.1:2379 --total 500 connect
//! oxbench --endpoint 127.0.0.1:2379 --cacert ca.crt --cert client.crt --key client.key put
//! oxbench --endpoint 127.0.0.1:2379 --user root:rootpw put
//! oxbench --endpoint 127.0.0.1:2379 --user root:rootpw --total 200 authenticate
//! ```
//!
//! With `--user`, oxbench logs in once and every request carries the token (auth enabled);
//! `authenticate` times logins, one after another (a bcrypt check each).
//!
//! `connect` times new connections (TCP, then TLS when asked, then the HTTP/2 preface and
//! one serializable Range), one after another. With `--cert` and `--key` (and `--cacert`
//! to verify the server, or `--insecure-skip-tls-verify`) every connection is TLS.
//!
//! Prints throughput and latency percentiles (p50, p90, p99, p99.9) in the shape etcd's
//! `benchmark` tool reports, so the two can be put side by side.

#[cfg(madsim)]
fn main() {
    eprintln!("oxbench drives real servers; build it without --cfg madsim");
}

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    use clap::Parser as _;
    let args = bench::Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(bench::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("oxbench: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(madsim))]
mod bench {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use oxcd::proto::etcdserverpb::auth_client::AuthClient;
    use oxcd::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
    use oxcd::proto::etcdserverpb::kv_client::KvClient;
    use oxcd::proto::etcdserverpb::request_op::Request as Op;
    use oxcd::proto::etcdserverpb::watch_client::WatchClient;
    use oxcd::proto::etcdserverpb::watch_request::RequestUnion;
    use oxcd::proto::etcdserverpb::AuthenticateRequest;
    use oxcd::proto::etcdserverpb::{
        Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
    };
    use tokio::sync::Mutex;
    use tonic::metadata::MetadataValue;
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::Channel;

    /// Attaches the token of `--user` to every request (nothing without one).
    #[derive(Clone)]
    struct Token(Option<MetadataValue<tonic::metadata::Ascii>>);

    impl tonic::service::Interceptor for Token {
        fn call(
            &mut self,
            mut request: tonic::Request<()>,
        ) -> Result<tonic::Request<()>, tonic::Status> {
            if let Some(token) = &self.0 {
                request.metadata_mut().insert("token", token.clone());
            }
            Ok(request)
        }
    }

    type Kv = KvClient<InterceptedService<Channel, Token>>;

    fn credentials(user: &str) -> Result<AuthenticateRequest, String> {
        let (name, password) = user.split_once(':').ok_or("--user takes name:password")?;
        Ok(AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
    }

    /// Logs in as `--user`, if given.
    async fn token(args: &Args, channel: &Channel) -> Result<Token, String> {
        let Some(user) = &args.user else {
            return Ok(Token(None));
        };
        let response = AuthClient::new(channel.clone())
            .authenticate(credentials(user)?)
            .await
            .map_err(|e| format!("logging in: {}", e.message()))?;
        let token = response
            .into_inner()
            .token
            .parse()
            .map_err(|_| "a token that is not ASCII")?;
        Ok(Token(Some(token)))
    }

    #[derive(clap::Parser, Debug, Clone)]
    #[command(name = "oxbench", about = "Load over the etcd v3 gRPC API")]
    pub struct Args {
        /// host:port of the server.
        #[arg(long, default_value = "127.0.0.1:2379")]
        endpoint: String,
        /// Concurrent clients (each its own stream of requests).
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// gRPC connections the clients share.
        #[arg(long, default_value_t = 4)]
        conns: usize,
        /// Requests in all.
        #[arg(long, default_value_t = 10_000)]
        total: usize,
        #[arg(long, default_value_t = 8)]
        key_size: usize,
        #[arg(long, default_value_t = 256)]
        val_size: usize,
        /// Distinct keys written (and read).
        #[arg(long, default_value_t = 100_000)]
        key_space: usize,
        /// Range reads are serializable (local) instead of linearizable.
        #[arg(long)]
        serializable: bool,
        /// TLS: verify the server's certificate against this CA bundle.
        #[arg(long)]
        cacert: Option<std::path::PathBuf>,
        /// TLS: the client certificate (with --key); giving it turns TLS on.
        #[arg(long)]
        cert: Option<std::path::PathBuf>,
        /// TLS: the client certificate's key.
        #[arg(long)]
        key: Option<std::path::PathBuf>,
        /// TLS without verifying the server's certificate (instead of --cacert).
        #[arg(long)]
        insecure_skip_tls_verify: bool,
        /// name:password: log in once and send the token with every request.
        #[arg(long)]
        user: Option<String>,
        /// put | range | txn-put | watch-latency | connect | authenticate
        workload: String,
    }

    use oxcd::net::dial::Dialer;

    fn dialer(args: &Args) -> Result<Dialer, String> {
        Dialer::from_flags(
            args.cacert.clone(),
            args.cert.clone(),
            args.key.clone(),
            args.insecure_skip_tls_verify,
        )
    }

    fn key(index: usize, size: usize) -> Bytes {
        let mut key = format!("{index:0width$}", width = size).into_bytes();
        key.truncate(size.max(1));
        Bytes::from(key)
    }

    struct Latencies(Vec<Duration>);

    impl Latencies {
        fn report(mut self, elapsed: Duration, failures: usize) {
            self.0.sort();
            let count = self.0.len();
            let at = |q: f64| {
                if count == 0 {
                    return 0.0;
                }
                let index = ((count as f64 * q).ceil() as usize).clamp(1, count) - 1;
                self.0[index].as_secs_f64() * 1000.0
            };
            let mean = self.0.iter().map(|d| d.as_secs_f64()).sum::<f64>() / count.max(1) as f64;
            println!("Summary:");
            println!("  Total:\t{:.4} secs.", elapsed.as_secs_f64());
            println!(
                "  Requests/sec:\t{:.1}",
                count as f64 / elapsed.as_secs_f64()
            );
            println!("  Average:\t{:.4} ms", mean * 1000.0);
            println!("  Failures:\t{failures}");
            println!(
                "Latency (ms): p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                at(0.50),
                at(0.90),
                at(0.99),
                at(0.999),
                at(1.0)
            );
        }
    }

    pub async fn run(args: Args) -> Result<(), String> {
        let dialer = dialer(&args)?;
        if args.workload == "watch-latency" {
            return watch_latency(&args, &dialer).await;
        }
        if args.workload == "connect" {
            return connect_latency(&args, &dialer).await;
        }
        if args.workload == "authenticate" {
            return authenticate_latency(&args, &dialer).await;
        }
        let mut channels = Vec::new();
        for _ in 0..args.conns.max(1) {
            channels.push(dialer.connect(&args.endpoint).await?);
        }
        let token = token(&args, &channels[0]).await?;
        let value = Bytes::from(vec![b'v'; args.val_size]);
        if args.workload == "range" {
            // Something to read.
            let mut client: Kv = KvClient::with_interceptor(channels[0].clone(), token.clone());
            for i in 0..args.key_space.min(1000) {
                client
                    .put(PutRequest {
                        key: key(i, args.key_size),
                        value: value.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let results = Arc::new(Mutex::new((Vec::with_capacity(args.total), 0usize)));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for client_index in 0..args.clients.max(1) {
            let channel = channels[client_index % channels.len()].clone();
            let mut client: Kv = KvClient::with_interceptor(channel, token.clone());
            let next = next.clone();
            let results = results.clone();
            let args = args.clone();
            let value = value.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0;
                let mut seed = client_index as u64 * 0x9e37_79b9 + 1;
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= args.total {
                        break;
                    }
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let k = key((seed % args.key_space as u64) as usize, args.key_size);
                    let began = Instant::now();
                    let outcome = match args.workload.as_str() {
                        "put" => client
                            .put(PutRequest {
                                key: k,
                                value: value.clone(),
                                ..Default::default()
                            })
                            .await
                            .map(|_| ()),
                        "range" => {
                            let k = key(
                                (seed % args.key_space.min(1000) as u64) as usize,
                                args.key_size,
                            );
                            client
                                .range(RangeRequest {
                                    key: k,
                                    serializable: args.serializable,
                                    ..Default::default()
                                })
                                .await
                                .map(|_| ())
                        }
                        "txn-put" => client
                            .txn(TxnRequest {
                                compare: vec![Compare {
                                    result: CompareResult::Greater as i32,
                                    target: CompareTarget::Mod as i32,
                                    key: k.clone(),
                                    target_union: Some(TargetUnion::ModRevision(-1)),
                                    range_end: Bytes::new(),
                                }],
                                success: vec![RequestOp {
                                    request: Some(Op::RequestPut(PutRequest {
                                        key: k,
                                        value: value.clone(),
                                        ..Default::default()
                                    })),
                                }],
                                failure: Vec::new(),
                            })
                            .await
                            .map(|_| ()),
                        other => return Err(format!("unknown workload {other}")),
                    };
                    match outcome {
                        Ok(()) => latencies.push(began.elapsed()),
                        Err(_) => failures += 1,
                    }
                }
                let mut results = results.lock().await;
                results.0.extend(latencies);
                results.1 += failures;
                Ok(())
            }));
        }
        for task in tasks {
            task.await.map_err(|e| e.to_string())??;
        }
        let elapsed = start.elapsed();
        let (latencies, failures) = std::mem::take(&mut *results.lock().await);
        println!("oxbench {} against {}: {} clients, {} conns, {} requests, {}-byte keys, {}-byte values",
            args.workload, args.endpoint, args.clients, args.conns, args.total, args.key_size, args.val_size);
        Latencies(latencies).report(elapsed, failures);
        Ok(())
    }

    /// Time to open a connection and have it answer one request, one connection after
    /// another: the cost of a new client (with TLS, its handshake).
    async fn connect_latency(args: &Args, dialer: &Dialer) -> Result<(), String> {
        let mut latencies = Vec::with_capacity(args.total);
        let start = Instant::now();
        for _ in 0..args.total {
            let began = Instant::now();
            let channel = dialer.connect(&args.endpoint).await?;
            KvClient::new(channel)
                .range(RangeRequest {
                    key: Bytes::from_static(b"oxbench-connect"),
                    serializable: true,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            latencies.push(began.elapsed());
        }
        println!(
            "oxbench connect against {}: {} new connections, each answering one serializable range",
            args.endpoint, args.total
        );
        Latencies(latencies).report(start.elapsed(), 0);
        Ok(())
    }

    /// Time to log in (Authenticate: a bcrypt check and a trip through the log), one login
    /// after another on one connection.
    async fn authenticate_latency(args: &Args, dialer: &Dialer) -> Result<(), String> {
        let user = args.user.as_deref().ok_or("authenticate needs --user")?;
        let request = credentials(user)?;
        let mut client = AuthClient::new(dialer.connect(&args.endpoint).await?);
        let mut latencies = Vec::with_capacity(args.total);
        let start = Instant::now();
        for _ in 0..args.total {
            let began = Instant::now();
            client
                .authenticate(request.clone())
                .await
                .map_err(|e| format!("logging in: {}", e.message()))?;
            latencies.push(began.elapsed());
        }
        println!(
            "oxbench authenticate against {}: {} logins one after another",
            args.endpoint, args.total
        );
        Latencies(latencies).report(start.elapsed(), 0);
        Ok(())
    }

    /// Time from a put's response to the watch event it caused.
    async fn watch_latency(args: &Args, dialer: &Dialer) -> Result<(), String> {
        let channel = dialer.connect(&args.endpoint).await?;
        let mut watch = WatchClient::new(channel.clone());
        let (requests, receiver) = tokio::sync::mpsc::channel(4);
        requests
            .send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: Bytes::from_static(b"oxbench-watch"),
                    ..Default::default()
                })),
            })
            .await
            .map_err(|e| e.to_string())?;
        let stream = oxcd::server::ReceiverStream(receiver);
        let mut responses = watch
            .watch(stream)
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let created = responses.message().await.map_err(|e| e.to_string())?;
        if created.is_none() {
            return Err("the watch was not created".into());
        }
        let mut client = KvClient::new(channel);
        let value = Bytes::from(vec![b'v'; args.val_size]);
        let mut latencies = Vec::new();
        let start = Instant::now();
        for _ in 0..args.total {
            let sent = Instant::now();
            client
                .put(PutRequest {
                    key: Bytes::from_static(b"oxbench-watch"),
                    value: value.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            loop {
                let response = responses.message().await.map_err(|e| e.to_string())?;
                match response {
                    Some(response) if !response.events.is_empty() => break,
                    Some(_) => continue,
                    None => return Err("the watch ended".into()),
                }
            }
            latencies.push(sent.elapsed());
        }
        drop(requests);
        println!(
            "oxbench watch-latency against {}: {} put-then-event round trips",
            args.endpoint, args.total
        );
        Latencies(latencies).report(start.elapsed(), 0);
        Ok(())
    }
}
