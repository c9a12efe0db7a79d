//! The verbs about leases, members, endpoints, alarms, storage, access and concurrency.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use oxcd::proto::authpb;
use oxcd::proto::etcdserverpb as pb;

use crate::client::{address, Client};
use crate::print::{go_quote, human_bytes, table, Format};
use crate::{block_on, Failure, Global};

/// An ID given in hex; leases are parsed as signed (etcdctl's `ParseInt`), members as
/// unsigned.
fn hex_id(text: &str, what: &str) -> Result<u64, Failure> {
    let parser = if what == "lease" {
        "ParseInt"
    } else {
        "ParseUint"
    };
    u64::from_str_radix(text, 16)
        .ok()
        .filter(|id| what != "lease" || i64::try_from(*id).is_ok())
        .ok_or_else(|| {
            Failure::bad_args(format!(
                "bad {what} ID arg (strconv.{parser}: parsing {text:?}: invalid syntax), expecting ID in Hex"
            ))
        })
}

fn header_of<T>(header: &Option<T>) -> Option<&T> {
    header.as_ref()
}

#[derive(Subcommand)]
pub enum LeaseCommand {
    /// Creates leases.
    Grant { ttl: String },
    /// Revokes leases.
    Revoke { id: String },
    /// Get lease information.
    Timetolive {
        id: String,
        /// Get keys attached to this lease.
        #[arg(long)]
        keys: bool,
    },
    /// List all active leases.
    List,
    /// Keeps leases alive (renew).
    KeepAlive {
        id: String,
        /// Resets the keep-alive time to its original value and exits immediately.
        #[arg(long)]
        once: bool,
    },
}

pub fn lease(global: &Global, command: &LeaseCommand) -> Result<(), Failure> {
    let printer = global.printer();
    match command {
        LeaseCommand::Grant { ttl } => {
            let ttl: i64 = ttl.parse().map_err(|_| {
                Failure::bad_args(format!(
                    "bad TTL (strconv.ParseInt: parsing {ttl:?}: invalid syntax)"
                ))
            })?;
            let response = block_on(async {
                let client = Client::connect(global).await?;
                client
                    .lease()
                    .lease_grant(client.request(pb::LeaseGrantRequest { ttl, id: 0 }))
                    .await
                    .map_err(|status| {
                        Failure::error(format!("failed to grant lease ({})", status.message()))
                    })
            })?;
            printer.grant(response.get_ref())
        }
        LeaseCommand::Revoke { id } => {
            let id = hex_id(id, "lease")? as i64;
            let response = block_on(async {
                let client = Client::connect(global).await?;
                client
                    .lease()
                    .lease_revoke(client.request(pb::LeaseRevokeRequest { id }))
                    .await
                    .map_err(|status| {
                        Failure::error(format!("failed to revoke lease ({})", status.message()))
                    })
            })?;
            printer.revoke(id, response.get_ref())
        }
        LeaseCommand::Timetolive { id, keys } => {
            let id = hex_id(id, "lease")? as i64;
            let response = block_on(async {
                let client = Client::connect(global).await?;
                client
                    .lease()
                    .lease_time_to_live(
                        client.request(pb::LeaseTimeToLiveRequest { id, keys: *keys }),
                    )
                    .await
                    .map_err(|status| Failure::bad_connection(status.message().to_string()))
            })?;
            printer.time_to_live(response.get_ref(), *keys)
        }
        LeaseCommand::List => {
            let response = block_on(async {
                let client = Client::connect(global).await?;
                client
                    .lease()
                    .lease_leases(client.request(pb::LeaseLeasesRequest {}))
                    .await
                    .map_err(|status| Failure::bad_connection(status.message().to_string()))
            })?;
            printer.leases(response.get_ref())
        }
        LeaseCommand::KeepAlive { id, once } => {
            let id = hex_id(id, "lease")? as i64;
            block_on(async {
                let client = Client::connect(global).await?;
                let (sender, receiver) = tokio::sync::mpsc::channel(1);
                let _ = sender.send(pb::LeaseKeepAliveRequest { id }).await;
                let mut stream = client
                    .lease()
                    .lease_keep_alive(client.stream_request(oxcd::server::ReceiverStream(receiver)))
                    .await
                    .map_err(|status| Failure::bad_connection(status.message().to_string()))?
                    .into_inner();
                loop {
                    let response = stream
                        .message()
                        .await
                        .map_err(|status| Failure::bad_connection(status.message().to_string()))?;
                    let Some(response) = response else {
                        return Err(Failure::bad_connection("the keep-alive stream closed"));
                    };
                    if response.ttl <= 0 {
                        println!("lease {id:016x} expired or revoked.");
                        return Ok(());
                    }
                    printer.keep_alive(&response)?;
                    if *once {
                        return Ok(());
                    }
                    // clientv3 renews at a third of the TTL.
                    tokio::time::sleep(Duration::from_secs((response.ttl as u64 / 3).max(1))).await;
                    if sender.send(pb::LeaseKeepAliveRequest { id }).await.is_err() {
                        return Err(Failure::bad_connection("the keep-alive stream closed"));
                    }
                }
            })
        }
    }
}

#[derive(Subcommand)]
pub enum MemberCommand {
    /// Adds a member into the cluster.
    Add {
        /// The new member's name.
        names: Vec<String>,
        /// Comma separated peer URLs for the new member.
        #[arg(long, default_value = "")]
        peer_urls: String,
        /// Add as a learner (a non-voting member).
        #[arg(long)]
        learner: bool,
    },
    /// Removes a member from the cluster.
    Remove { id: String },
    /// Updates a member's peer URLs.
    Update {
        id: String,
        #[arg(long, default_value = "")]
        peer_urls: String,
    },
    /// Lists all members in the cluster.
    List,
    /// Promotes a learner to a voting member.
    Promote { id: String },
}

pub fn member(global: &Global, command: &MemberCommand) -> Result<(), Failure> {
    let printer = global.printer();
    block_on(async {
        let client = || Client::connect(global);
        match command {
            MemberCommand::Add {
                names,
                peer_urls,
                learner,
            } => {
                let Some(name) = names.first() else {
                    return Err(Failure::bad_args("member name not provided"));
                };
                if names.len() > 1 {
                    let mut message = "too many arguments".to_string();
                    for arg in names {
                        if arg.to_lowercase().starts_with("http") {
                            message += &format!(", did you mean --peer-urls={arg}");
                        }
                    }
                    return Err(Failure::bad_args(message));
                }
                if peer_urls.is_empty() {
                    return Err(Failure::bad_args("member peer urls not provided"));
                }
                let urls: Vec<String> = peer_urls.split(',').map(str::to_string).collect();
                let client = client().await?;
                let response = client
                    .cluster()
                    .member_add(client.request(pb::MemberAddRequest {
                        peer_ur_ls: urls,
                        is_learner: *learner,
                    }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                let new_id = response.member.as_ref().map_or(0, |m| m.id);
                let cluster_id = response.header.as_ref().map_or(0, |h| h.cluster_id);
                printer.member_change(
                    &format!("Member {new_id:16x} added to cluster {cluster_id:16x}"),
                    header_of(&response.header),
                    &response,
                    "etcdserverpb.MemberAddResponse",
                )?;
                if printer.format == Format::Simple {
                    let mut initial = Vec::new();
                    for member in &response.members {
                        for url in &member.peer_ur_ls {
                            let member_name = if member.id == new_id {
                                name
                            } else {
                                &member.name
                            };
                            initial.push(format!("{member_name}={url}"));
                        }
                    }
                    println!();
                    println!("ETCD_NAME={}", go_quote(name.as_bytes()));
                    println!(
                        "ETCD_INITIAL_CLUSTER={}",
                        go_quote(initial.join(",").as_bytes())
                    );
                    println!(
                        "ETCD_INITIAL_ADVERTISE_PEER_URLS={}",
                        go_quote(peer_urls.as_bytes())
                    );
                    println!("ETCD_INITIAL_CLUSTER_STATE=\"existing\"");
                }
                Ok(())
            }
            MemberCommand::Remove { id } => {
                let id = hex_id(id, "member")?;
                let client = client().await?;
                let response = client
                    .cluster()
                    .member_remove(client.request(pb::MemberRemoveRequest { id }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                let cluster_id = response.header.as_ref().map_or(0, |h| h.cluster_id);
                printer.member_change(
                    &format!("Member {id:16x} removed from cluster {cluster_id:16x}"),
                    header_of(&response.header),
                    &response,
                    "etcdserverpb.MemberRemoveResponse",
                )
            }
            MemberCommand::Update { id, peer_urls } => {
                let id = hex_id(id, "member")?;
                if peer_urls.is_empty() {
                    return Err(Failure::bad_args("member peer urls not provided"));
                }
                let client = client().await?;
                let response = client
                    .cluster()
                    .member_update(client.request(pb::MemberUpdateRequest {
                        id,
                        peer_ur_ls: peer_urls.split(',').map(str::to_string).collect(),
                    }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                let cluster_id = response.header.as_ref().map_or(0, |h| h.cluster_id);
                printer.member_change(
                    &format!("Member {id:16x} updated in cluster {cluster_id:16x}"),
                    header_of(&response.header),
                    &response,
                    "etcdserverpb.MemberUpdateResponse",
                )
            }
            MemberCommand::Promote { id } => {
                let id = hex_id(id, "member")?;
                let client = client().await?;
                let response = client
                    .cluster()
                    .member_promote(client.request(pb::MemberPromoteRequest { id }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                let cluster_id = response.header.as_ref().map_or(0, |h| h.cluster_id);
                printer.member_change(
                    &format!("Member {id:16x} promoted in cluster {cluster_id:16x}"),
                    header_of(&response.header),
                    &response,
                    "etcdserverpb.MemberPromoteResponse",
                )
            }
            MemberCommand::List => {
                let client = client().await?;
                let response = client
                    .cluster()
                    .member_list(client.request(pb::MemberListRequest {
                        linearizable: false,
                    }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                printer.member_list(&response)
            }
        }
    })
}

#[derive(Subcommand)]
pub enum EndpointCommand {
    /// Checks the healthiness of endpoints.
    Health {
        /// Use all endpoints from the cluster member list.
        #[arg(long)]
        cluster: bool,
    },
    /// Prints out the status of endpoints.
    Status {
        #[arg(long)]
        cluster: bool,
    },
    /// Prints the KV history hash for each endpoint.
    Hashkv {
        #[arg(long)]
        cluster: bool,
        /// The revision to hash at (0: the newest).
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
}

/// `--endpoints`, or with `--cluster` every member's client URLs.
async fn endpoints_of(global: &Global, cluster: bool) -> Result<Vec<String>, Failure> {
    if !cluster {
        return Ok(global.endpoints());
    }
    let client = Client::connect(global).await?;
    let members = client
        .cluster()
        .member_list(client.request(pb::MemberListRequest {
            linearizable: false,
        }))
        .await
        .map_err(|status| {
            Failure::error(format!(
                "failed to fetch endpoints from etcd cluster member list: {}",
                status.message()
            ))
        })?
        .into_inner();
    Ok(members
        .members
        .into_iter()
        .flat_map(|m| m.client_ur_ls)
        .collect())
}

/// A duration as Go's `time.Duration.String` prints it (`1.234567ms`, `2.5s`).
fn go_duration(elapsed: Duration) -> String {
    let nanos = elapsed.as_nanos();
    let trim = |value: f64| {
        let text = format!("{value:.9}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        text.to_string()
    };
    if nanos < 1_000 {
        format!("{nanos}ns")
    } else if nanos < 1_000_000 {
        format!("{}µs", trim(nanos as f64 / 1e3))
    } else if nanos < 1_000_000_000 {
        format!("{}ms", trim(nanos as f64 / 1e6))
    } else {
        format!("{}s", trim(nanos as f64 / 1e9))
    }
}

struct Health {
    endpoint: String,
    health: bool,
    took: String,
    error: String,
}

pub fn endpoint(global: &Global, command: &EndpointCommand) -> Result<(), Failure> {
    let printer = global.printer();
    block_on(async {
        match command {
            EndpointCommand::Health { cluster } => {
                let endpoints = endpoints_of(global, *cluster).await?;
                let checks = endpoints.iter().map(|endpoint| {
                    let (global, endpoint) = (global.clone(), endpoint.clone());
                    async move {
                        let started = Instant::now();
                        let client = match Client::connect_to(&global, &endpoint).await {
                            Ok(client) => client,
                            Err(failure) => {
                                return Health {
                                    endpoint: endpoint.clone(),
                                    health: false,
                                    took: go_duration(started.elapsed()),
                                    error: failure.message,
                                }
                            }
                        };
                        let result = client
                            .kv()
                            .range(client.request(pb::RangeRequest {
                                key: "health".into(),
                                ..Default::default()
                            }))
                            .await;
                        let took = go_duration(started.elapsed());
                        match result {
                            Ok(_) => Health {
                                endpoint: endpoint.clone(),
                                health: true,
                                took,
                                error: String::new(),
                            },
                            Err(status) if status.message() == "etcdserver: permission denied" => {
                                Health {
                                    endpoint: endpoint.clone(),
                                    health: true,
                                    took,
                                    error: String::new(),
                                }
                            }
                            Err(status) => Health {
                                endpoint: endpoint.clone(),
                                health: false,
                                took,
                                error: Failure::status(status).message,
                            },
                        }
                    }
                });
                let results = futures_join(checks.collect()).await;
                let unhealthy = results.iter().any(|h| !h.error.is_empty());
                match printer.format {
                    Format::Simple => {
                        for h in &results {
                            if h.error.is_empty() {
                                eprintln!(
                                    "{} is healthy: successfully committed proposal: took = {}",
                                    h.endpoint, h.took
                                );
                            } else {
                                eprintln!(
                                    "{} is unhealthy: failed to commit proposal: {}",
                                    h.endpoint, h.error
                                );
                            }
                        }
                    }
                    Format::Json => {
                        let items: Vec<String> = results
                            .iter()
                            .map(|h| {
                                let error = if h.error.is_empty() {
                                    String::new()
                                } else {
                                    format!(",\"error\":{}", oxcd::server::go_string(&h.error))
                                };
                                format!(
                                    "{{\"endpoint\":{},\"health\":{},\"took\":{}{error}}}",
                                    oxcd::server::go_string(&h.endpoint),
                                    h.health,
                                    oxcd::server::go_string(&h.took)
                                )
                            })
                            .collect();
                        println!("[{}]", items.join(","));
                    }
                    Format::Table => {
                        let rows: Vec<Vec<String>> = results
                            .iter()
                            .map(|h| {
                                vec![
                                    h.endpoint.clone(),
                                    h.health.to_string(),
                                    h.took.clone(),
                                    h.error.clone(),
                                ]
                            })
                            .collect();
                        print!("{}", table(&["ENDPOINT", "HEALTH", "TOOK", "ERROR"], &rows));
                    }
                    Format::Fields => {
                        for h in &results {
                            println!("\"Endpoint\" : {}", go_quote(h.endpoint.as_bytes()));
                            println!("\"Health\" : {}", h.health);
                            println!("\"Took\" : {}", h.took);
                            println!("\"Error\" : {}", h.error);
                            println!();
                        }
                    }
                }
                if unhealthy {
                    return Err(Failure::error("unhealthy cluster"));
                }
                Ok(())
            }
            EndpointCommand::Status { cluster } => {
                let endpoints = endpoints_of(global, *cluster).await?;
                let mut statuses = Vec::new();
                for endpoint in &endpoints {
                    let status = async {
                        let client = Client::connect_to(global, endpoint).await?;
                        client
                            .maintenance()
                            .status(client.request(pb::StatusRequest {}))
                            .await
                            .map_err(Failure::status)
                    }
                    .await;
                    match status {
                        Ok(status) => statuses.push((endpoint.clone(), status.into_inner())),
                        Err(failure) => eprintln!(
                            "Failed to get the status of endpoint {endpoint} ({})",
                            failure.message
                        ),
                    }
                }
                print_statuses(&printer.format, &statuses);
                if statuses.len() < endpoints.len() {
                    return Err(Failure::error("failed to get the status of every endpoint"));
                }
                Ok(())
            }
            EndpointCommand::Hashkv { cluster, rev } => {
                let endpoints = endpoints_of(global, *cluster).await?;
                let mut hashes = Vec::new();
                for endpoint in &endpoints {
                    let hash = async {
                        let client = Client::connect_to(global, endpoint).await?;
                        client
                            .maintenance()
                            .hash_kv(client.request(pb::HashKvRequest { revision: *rev }))
                            .await
                            .map_err(Failure::status)
                    }
                    .await;
                    match hash {
                        Ok(hash) => hashes.push((endpoint.clone(), hash.into_inner())),
                        Err(failure) => eprintln!(
                            "Failed to get the hash of endpoint {endpoint} ({})",
                            failure.message
                        ),
                    }
                }
                match printer.format {
                    Format::Simple => {
                        for (endpoint, hash) in &hashes {
                            println!("{endpoint}, {}", hash.hash);
                        }
                    }
                    Format::Table => {
                        let rows: Vec<Vec<String>> = hashes
                            .iter()
                            .map(|(endpoint, hash)| vec![endpoint.clone(), hash.hash.to_string()])
                            .collect();
                        print!("{}", table(&["ENDPOINT", "HASH"], &rows));
                    }
                    Format::Json => {
                        let items: Vec<String> = hashes
                            .iter()
                            .map(|(endpoint, hash)| {
                                format!(
                                    "{{\"Endpoint\":{},\"HashKV\":{}}}",
                                    oxcd::server::go_string(endpoint),
                                    crate::print::json(hash, "etcdserverpb.HashKVResponse")
                                )
                            })
                            .collect();
                        println!("[{}]", items.join(","));
                    }
                    Format::Fields => {
                        for (endpoint, hash) in &hashes {
                            let header = hash.header.unwrap_or_default();
                            println!("\"ClusterID\" : {}\n\"MemberID\" : {}\n\"Revision\" : {}\n\"RaftTerm\" : {}", header.cluster_id, header.member_id, header.revision, header.raft_term);
                            println!("\"Endpoint\" : {}", go_quote(endpoint.as_bytes()));
                            println!("\"Hash\" : {}", hash.hash);
                            println!();
                        }
                    }
                }
                if hashes.len() < endpoints.len() {
                    return Err(Failure::error("failed to get the hash of every endpoint"));
                }
                Ok(())
            }
        }
    })
}

/// Runs every future to its end, side by side, keeping their order.
async fn futures_join<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut out = Vec::with_capacity(futures.len());
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    for handle in handles {
        if let Ok(result) = handle.await {
            out.push(result);
        }
    }
    out
}

fn print_statuses(format: &Format, statuses: &[(String, pb::StatusResponse)]) {
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|(endpoint, s)| {
            let member_id = s.header.as_ref().map_or(0, |h| h.member_id);
            vec![
                endpoint.clone(),
                format!("{member_id:x}"),
                s.version.clone(),
                human_bytes(s.db_size.max(0) as u64),
                (s.leader == member_id).to_string(),
                s.is_learner.to_string(),
                s.raft_term.to_string(),
                s.raft_index.to_string(),
                s.raft_applied_index.to_string(),
                s.errors.join(", "),
            ]
        })
        .collect();
    match format {
        Format::Simple => {
            for row in rows {
                println!("{}", row.join(", "));
            }
        }
        Format::Table => print!(
            "{}",
            table(
                &[
                    "ENDPOINT",
                    "ID",
                    "VERSION",
                    "DB SIZE",
                    "IS LEADER",
                    "IS LEARNER",
                    "RAFT TERM",
                    "RAFT INDEX",
                    "RAFT APPLIED INDEX",
                    "ERRORS"
                ],
                &rows
            )
        ),
        Format::Json => {
            let items: Vec<String> = statuses
                .iter()
                .map(|(endpoint, s)| {
                    format!(
                        "{{\"Endpoint\":{},\"Status\":{}}}",
                        oxcd::server::go_string(endpoint),
                        crate::print::json(s, "etcdserverpb.StatusResponse")
                    )
                })
                .collect();
            println!("[{}]", items.join(","));
        }
        Format::Fields => {
            for (endpoint, s) in statuses {
                let header = s.header.unwrap_or_default();
                println!(
                    "\"ClusterID\" : {}\n\"MemberID\" : {}\n\"Revision\" : {}\n\"RaftTerm\" : {}",
                    header.cluster_id, header.member_id, header.revision, header.raft_term
                );
                println!("\"Version\" : {}", go_quote(s.version.as_bytes()));
                println!("\"DBSize\" : {}", s.db_size);
                println!("\"Leader\" : {}", s.leader);
                println!("\"IsLearner\" : {}", s.is_learner);
                println!("\"RaftIndex\" : {}", s.raft_index);
                println!("\"RaftTerm\" : {}", s.raft_term);
                println!("\"RaftAppliedIndex\" : {}", s.raft_applied_index);
                println!("\"Errors\" : [{}]", s.errors.join(" "));
                println!("\"Endpoint\" : {}", go_quote(endpoint.as_bytes()));
                println!();
            }
        }
    }
}

#[derive(Subcommand)]
pub enum AlarmCommand {
    /// Disarms all alarms.
    Disarm,
    /// Lists all alarms.
    List,
}

pub fn alarm(global: &Global, command: &AlarmCommand) -> Result<(), Failure> {
    let action = match command {
        AlarmCommand::Disarm => pb::alarm_request::AlarmAction::Deactivate,
        AlarmCommand::List => pb::alarm_request::AlarmAction::Get,
    };
    block_on(async {
        let client = Client::connect(global).await?;
        let mut response = client
            .maintenance()
            .alarm(client.request(pb::AlarmRequest {
                action: pb::alarm_request::AlarmAction::Get as i32,
                member_id: 0,
                alarm: pb::AlarmType::None as i32,
            }))
            .await
            .map_err(Failure::status)?
            .into_inner();
        if action == pb::alarm_request::AlarmAction::Deactivate {
            // clientv3's AlarmDisarm: each raised alarm, one by one.
            let raised = std::mem::take(&mut response.alarms);
            for alarm in raised {
                let disarmed = client
                    .maintenance()
                    .alarm(client.request(pb::AlarmRequest {
                        action: action as i32,
                        member_id: alarm.member_id,
                        alarm: alarm.alarm,
                    }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                response.header = disarmed.header;
                response.alarms.extend(disarmed.alarms);
            }
        }
        global.printer().alarms(&response)
    })
}

#[derive(Args)]
pub struct DefragArgs {
    /// Use all endpoints from the cluster member list.
    #[arg(long)]
    cluster: bool,
    /// Defragments a data dir not in use by a server (not supported: oxcd's backend
    /// compacts itself online).
    #[arg(long)]
    data_dir: Option<String>,
}

pub fn defrag(global: &Global, args: &DefragArgs) -> Result<(), Failure> {
    if args.data_dir.is_some() {
        return Err(Failure::bad_feature(
            "--data-dir: defragment a stopped member by starting it and running defrag against it",
        ));
    }
    block_on(async {
        let endpoints = endpoints_of(global, args.cluster).await?;
        let mut failed = false;
        for endpoint in &endpoints {
            let bar = crate::snapshot::progress_bar("{spinner} defragmenting {msg} {elapsed}");
            bar.set_message(endpoint.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            let result = async {
                let client = Client::connect_to(global, endpoint).await?;
                let mut request = client.request(pb::DefragmentRequest {});
                request.set_timeout(Duration::from_secs(3600));
                client
                    .maintenance()
                    .defragment(request)
                    .await
                    .map_err(Failure::status)
            }
            .await;
            bar.finish_and_clear();
            match result {
                Ok(_) => println!("Finished defragmenting etcd member[{endpoint}]"),
                Err(failure) => {
                    eprintln!(
                        "Failed to defragment etcd member[{endpoint}] ({})",
                        failure.message
                    );
                    failed = true;
                }
            }
        }
        if failed {
            return Err(Failure::error("failed to defragment every member"));
        }
        Ok(())
    })
}

pub fn move_leader(global: &Global, transferee: &str) -> Result<(), Failure> {
    let target = u64::from_str_radix(transferee, 16).map_err(|_| {
        Failure::bad_args(format!(
            "strconv.ParseUint: parsing {transferee:?}: invalid syntax"
        ))
    })?;
    let printer = global.printer();
    block_on(async {
        let endpoints = global.endpoints();
        for endpoint in &endpoints {
            let client = Client::connect_to(global, endpoint).await?;
            let status = client
                .maintenance()
                .status(client.request(pb::StatusRequest {}))
                .await
                .map_err(Failure::status)?
                .into_inner();
            let member_id = status.header.as_ref().map_or(0, |h| h.member_id);
            if status.leader != member_id {
                continue;
            }
            client
                .maintenance()
                .move_leader(client.request(pb::MoveLeaderRequest { target_id: target }))
                .await
                .map_err(Failure::status)?;
            return printer.simple_only(&format!(
                "Leadership transferred from {member_id:x} to {target:x}\n"
            ));
        }
        Err(Failure::bad_args(format!(
            "no leader endpoint given at [{}]",
            endpoints
                .iter()
                .map(|e| address(e))
                .collect::<Vec<_>>()
                .join(" ")
        )))
    })
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Adds a new user.
    Add {
        /// The user name, or name:password.
        name: String,
        /// Read the password from stdin instead of the terminal.
        #[arg(long, default_value = "true", num_args = 0..=1, default_missing_value = "true")]
        interactive: String,
        /// Supply the password on the command line.
        #[arg(long, default_value = "")]
        new_user_password: String,
        /// A user without password (certificate CN based auth only).
        #[arg(long)]
        no_password: bool,
    },
    /// Deletes a user.
    Delete { name: String },
    /// Gets detailed information of a user.
    Get {
        name: String,
        /// Show the permissions of the roles granted to the user.
        #[arg(long)]
        detail: bool,
    },
    /// Lists all users.
    List,
    /// Changes the password of a user.
    Passwd {
        name: String,
        #[arg(long, default_value = "true", num_args = 0..=1, default_missing_value = "true")]
        interactive: String,
    },
    /// Grants a role to a user.
    GrantRole { name: String, role: String },
    /// Revokes a role from a user.
    RevokeRole { name: String, role: String },
}

/// A password from stdin: a line, asked twice with prompts when interactive.
fn read_new_password(name: &str, interactive: bool) -> Result<String, Failure> {
    use std::io::{BufRead as _, Write as _};
    let read = |prompt: &str| -> Result<String, Failure> {
        if interactive {
            eprint!("{prompt}");
            let _ = std::io::stderr().flush();
        }
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|error| Failure::bad_args(format!("failed to ask password: {error}")))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    if !interactive {
        let line = read("")?;
        return Ok(line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string());
    }
    let first = read(&format!("Password of {name}: "))?;
    if first.is_empty() {
        return Err(Failure::bad_args("empty password"));
    }
    let second = read(&format!("Type password of {name} again for confirmation: "))?;
    if first != second {
        return Err(Failure::bad_args("given passwords are different"));
    }
    Ok(first)
}

fn role_get_text(role: &str, perms: &[authpb::Permission]) -> String {
    let mut out = format!("Role {role}\nKV Read:\n");
    let range = |perm: &authpb::Permission| {
        let key = String::from_utf8_lossy(&perm.key).into_owned();
        let end = String::from_utf8_lossy(&perm.range_end).into_owned();
        if perm.range_end.is_empty() {
            return format!("\t{key}\n");
        }
        let mut text = if perm.range_end.as_ref() != b"\0" {
            format!("\t[{key}, {end})")
        } else {
            format!("\t[{key}, <open ended>")
        };
        if crate::kv::prefix_end(&perm.key) == perm.range_end.as_ref() {
            text += &format!(" (prefix {key})");
        }
        text + "\n"
    };
    use authpb::permission::Type;
    for perm in perms {
        if perm.perm_type == Type::Read as i32 || perm.perm_type == Type::Readwrite as i32 {
            out += &range(perm);
        }
    }
    out += "KV Write:\n";
    for perm in perms {
        if perm.perm_type == Type::Write as i32 || perm.perm_type == Type::Readwrite as i32 {
            out += &range(perm);
        }
    }
    out
}

pub fn user(global: &Global, command: &UserCommand) -> Result<(), Failure> {
    let printer = global.printer();
    // Passwords are asked before connecting, as etcdctl does.
    let password = match command {
        UserCommand::Add {
            name,
            interactive,
            new_user_password,
            no_password,
        } => {
            if *no_password {
                None
            } else if !new_user_password.is_empty() {
                Some((name.clone(), new_user_password.clone()))
            } else if let Some((user, password)) = name.split_once(':') {
                if user.is_empty() {
                    return Err(Failure::bad_args("empty user name is not allowed"));
                }
                Some((user.to_string(), password.to_string()))
            } else {
                Some((
                    name.clone(),
                    read_new_password(name, interactive != "false")?,
                ))
            }
        }
        UserCommand::Passwd { name, interactive } => Some((
            name.clone(),
            read_new_password(name, interactive != "false")?,
        )),
        _ => None,
    };
    block_on(async {
        let client = Client::connect(global).await?;
        let mut auth = client.auth();
        match command {
            UserCommand::Add {
                name, no_password, ..
            } => {
                let (name, password) = password.unwrap_or_else(|| (name.clone(), String::new()));
                let response = auth
                    .user_add(client.request(pb::AuthUserAddRequest {
                        name: name.clone(),
                        password,
                        options: Some(authpb::UserAddOptions {
                            no_password: *no_password,
                        }),
                        hashed_password: String::new(),
                    }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                printer.auth(
                    &format!("User {name} created\n"),
                    header_of(&response.header),
                    &response,
                    "etcdserverpb.AuthUserAddResponse",
                )
            }
            UserCommand::Delete { name } => {
                let response = auth
                    .user_delete(client.request(pb::AuthUserDeleteRequest { name: name.clone() }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                printer.auth(
                    &format!("User {name} deleted\n"),
                    header_of(&response.header),
                    &response,
                    "etcdserverpb.AuthUserDeleteResponse",
                )
            }
            UserCommand::Get { name, detail } => {
                let response = auth
                    .user_get(client.request(pb::AuthUserGetRequest { name: name.clone() }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                if *detail {
                    let mut text = format!("User: {name}\n");
                    for role in &response.roles {
                        let perms = auth
                            .role_get(client.request(pb::AuthRoleGetRequest { role: role.clone() }))
                            .await
                            .map_err(Failure::status)?
                            .into_inner()
                            .perm;
                        text += "\n";
                        text += &role_get_text(role, &perms);
                    }
                    return printer.simple_only(&text);
                }
                let mut text = format!("User: {name}\nRoles:");
                for role in &response.roles {
                    text += &format!(" {role}");
                }
                text += "\n";
                printer.auth(
                    &text,
                    header_of(&response.header),
                    &response,
                    "etcdserverpb.AuthUserGetResponse",
                )
            }
            UserCommand::List => {
                let response = auth
                    .user_list(client.request(pb::AuthUserListRequest {}))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                let text: String = response.users.iter().map(|u| format!("{u}\n")).collect();
                printer.auth(
                    &text,
                    header_of(&response.header),
                    &response,
                    "etcdserverpb.AuthUserListResponse",
                )
            }
            UserCommand::Passwd { .. } => {
                let (name, password) = password.unwrap_or_default();
                let response = auth
                    .user_change_password(client.request(pb::AuthUserChangePasswordRequest {
                        name,
                        password,
                        hashed_password: String::new(),
                    }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                printer.auth(
                    "Password updated\n",
                    header_of(&response.header),
                    &response,
                    "etcdserverpb.AuthUserChangePasswordResponse",
                )
            }
            UserCommand::GrantRole { name, role } => {
                let response = auth
                    .user_grant_role(client.request(pb::AuthUserGrantRoleRequest {
                        user: name.clone(),
                        role: role.clone(),
                    }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                printer.auth(
                    &format!("Role {role} is granted to user {name}\n"),
                    header_of(&response.header),
                    &response,
                    "etcdserverpb.AuthUserGrantRoleResponse",
                )
            }
            UserCommand::RevokeRole { name, role } => {
                let response = auth
                    .user_revoke_role(client.request(pb::AuthUserRevokeRoleRequest {
                        name: name.clone(),
                        role: role.clone(),
                    }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                printer.auth(
                    &format!("Role {role} is revoked from user {name}\n"),
                    header_of(&response.header),
                    &response,
                    "etcdserverpb.AuthUserRevokeRoleResponse",
                )
            }
        }
    })
}

#[derive(Subcommand)]
pub enum RoleCommand {
    /// Adds a new role.
    Add { role: String },
    /// Deletes a role.
    Delete { role: String },
    /// Gets detailed information of a role.
    Get { role: String },
    /// Lists all roles.
    List,
    /// Grants a key to a role: `read`, `write` or `readwrite`, a key and an optional end.
    GrantPermission {
        role: String,
        permission: String,
        #[arg(num_args = 1..=2, required = true)]
        keys: Vec<String>,
        /// Grant a prefix permission.
        #[arg(long)]
        prefix: bool,
        /// Grant a permission of keys that are greater than or equal to the given key.
        #[arg(long)]
        from_key: bool,
    },
    /// Revokes a key from a role.
    RevokePermission {
        role: String,
        #[arg(num_args = 1..=2, required = true)]
        keys: Vec<String>,
        #[arg(long)]
        prefix: bool,
        #[arg(long)]
        from_key: bool,
    },
}

/// The key and range end of a permission (etcdctl's `permRange`).
fn permission_range(
    keys: &[String],
    prefix: bool,
    from_key: bool,
) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let key = keys[0].as_bytes().to_vec();
    if prefix && from_key {
        return Err(Failure::bad_args(
            "--from-key and --prefix flags are mutually exclusive",
        ));
    }
    if key.is_empty() {
        let end = if prefix || from_key {
            vec![0]
        } else {
            Vec::new()
        };
        return Ok((vec![0], end));
    }
    let end = match (keys.get(1), prefix, from_key) {
        (None, true, _) => crate::kv::prefix_end(&key),
        (None, _, true) => vec![0],
        (None, false, false) => Vec::new(),
        (Some(_), true, _) => {
            return Err(Failure::bad_args(
                "unexpected endkey argument with --prefix flag",
            ))
        }
        (Some(_), _, true) => {
            return Err(Failure::bad_args(
                "unexpected endkey argument with --from-key flag",
            ))
        }
        (Some(end), false, false) => end.as_bytes().to_vec(),
    };
    Ok((key, end))
}

pub fn role(global: &Global, command: &RoleCommand) -> Result<(), Failure> {
    let printer = global.printer();
    block_on(async {
        let client = Client::connect(global).await?;
        let mut auth = client.auth();
        match command {
            RoleCommand::Add { role } => {
                let response = auth
                    .role_add(client.request(pb::AuthRoleAddRequest { name: role.clone() }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                printer.auth(
                    &format!("Role {role} created\n"),
                    header_of(&response.header),
                    &response,
                    "etcdserverpb.AuthRoleAddResponse",
                )
            }
            RoleCommand::Delete { role } => {
                let response = auth
                    .role_delete(client.request(pb::AuthRoleDeleteRequest { role: role.clone() }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                printer.auth(
                    &format!("Role {role} deleted\n"),
                    header_of(&response.header),
                    &response,
                    "etcdserverpb.AuthRoleDeleteResponse",
                )
            }
            RoleCommand::Get { role } => {
                let response = auth
                    .role_get(client.request(pb::AuthRoleGetRequest { role: role.clone() }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                printer.auth(
                    &role_get_text(role, &response.perm),
                    header_of(&response.header),
                    &response,
                    "etcdserverpb.AuthRoleGetResponse",
                )
            }
            RoleCommand::List => {
                let response = auth
                    .role_list(client.request(pb::AuthRoleListRequest {}))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                let text: String = response.roles.iter().map(|r| format!("{r}\n")).collect();
                printer.auth(
                    &text,
                    header_of(&response.header),
                    &response,
                    "etcdserverpb.AuthRoleListResponse",
                )
            }
            RoleCommand::GrantPermission {
                role,
                permission,
                keys,
                prefix,
                from_key,
            } => {
                use authpb::permission::Type;
                let perm_type = match permission.to_uppercase().as_str() {
                    "READ" => Type::Read,
                    "WRITE" => Type::Write,
                    "READWRITE" => Type::Readwrite,
                    _ => {
                        return Err(Failure::bad_args(format!(
                            "invalid permission type: {permission}"
                        )))
                    }
                };
                let (key, range_end) = permission_range(keys, *prefix, *from_key)?;
                let response = auth
                    .role_grant_permission(client.request(pb::AuthRoleGrantPermissionRequest {
                        name: role.clone(),
                        perm: Some(authpb::Permission {
                            perm_type: perm_type as i32,
                            key: key.into(),
                            range_end: range_end.into(),
                        }),
                    }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                printer.auth(
                    &format!("Role {role} updated\n"),
                    header_of(&response.header),
                    &response,
                    "etcdserverpb.AuthRoleGrantPermissionResponse",
                )
            }
            RoleCommand::RevokePermission {
                role,
                keys,
                prefix,
                from_key,
            } => {
                let (key, range_end) = permission_range(keys, *prefix, *from_key)?;
                let response = auth
                    .role_revoke_permission(client.request(pb::AuthRoleRevokePermissionRequest {
                        role: role.clone(),
                        key: key.clone().into(),
                        range_end: range_end.clone().into(),
                    }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                let key = &keys[0];
                let end = String::from_utf8_lossy(&range_end);
                let text = if range_end.is_empty() {
                    format!("Permission of key {key} is revoked from role {role}\n")
                } else if range_end != b"\0" {
                    format!("Permission of range [{key}, {end}) is revoked from role {role}\n")
                } else {
                    format!(
                        "Permission of range [{key}, <open ended> is revoked from role {role}\n"
                    )
                };
                printer.auth(
                    &text,
                    header_of(&response.header),
                    &response,
                    "etcdserverpb.AuthRoleRevokePermissionResponse",
                )
            }
        }
    })
}

#[derive(Subcommand)]
pub enum AuthCommand {
    /// Enables authentication.
    Enable,
    /// Disables authentication.
    Disable,
}

pub fn auth(global: &Global, command: &AuthCommand) -> Result<(), Failure> {
    block_on(async {
        let client = Client::connect(global).await?;
        let mut auth = client.auth();
        match command {
            AuthCommand::Enable => loop {
                match auth
                    .auth_enable(client.request(pb::AuthEnableRequest {}))
                    .await
                {
                    Ok(_) => {
                        println!("Authentication Enabled");
                        return Ok(());
                    }
                    // As etcdctl: make the root role and grant it to root, then again.
                    Err(status)
                        if status.message() == "etcdserver: root user does not have root role" =>
                    {
                        match auth
                            .role_add(client.request(pb::AuthRoleAddRequest {
                                name: "root".into(),
                            }))
                            .await
                        {
                            Ok(_) => {}
                            Err(status)
                                if status.message() == "etcdserver: role name already exists" => {}
                            Err(status) => return Err(Failure::status(status)),
                        }
                        auth.user_grant_role(client.request(pb::AuthUserGrantRoleRequest {
                            user: "root".into(),
                            role: "root".into(),
                        }))
                        .await
                        .map_err(Failure::status)?;
                    }
                    Err(status) => return Err(Failure::status(status)),
                }
            },
            AuthCommand::Disable => {
                auth.auth_disable(client.request(pb::AuthDisableRequest {}))
                    .await
                    .map_err(Failure::status)?;
                println!("Authentication Disabled");
                Ok(())
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_nanos(1_234_567)), "1.234567ms");
        assert_eq!(go_duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(go_duration(Duration::from_micros(15)), "15µs");
    }

    #[test]
    fn permission_ranges_follow_etcdctl() {
        let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            permission_range(&keys(&["a"]), true, false).unwrap().1,
            b"b"
        );
        assert_eq!(
            permission_range(&keys(&["a"]), false, true).unwrap().1,
            b"\0"
        );
        assert_eq!(
            permission_range(&keys(&["a", "c"]), false, false)
                .unwrap()
                .1,
            b"c"
        );
        assert!(permission_range(&keys(&["a", "c"]), true, false).is_err());
        assert_eq!(
            permission_range(&keys(&[""]), true, false).unwrap(),
            (vec![0], vec![0])
        );
    }
}
