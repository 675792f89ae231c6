//! `freshet group list|describe|reset-offsets|delete`.

use std::collections::{BTreeMap, BTreeSet};

use clap::{ArgGroup, Subcommand};

use super::{print_table, ConnArgs};
use crate::client::consumer::list_offsets;
use crate::client::{admin, Client, ClientError};

/// `freshet group ...`
#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups and their states
    #[command(after_help = "Example:\n  freshet group list")]
    List {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Show a group's state, members, assignments, committed offsets and lag
    #[command(after_help = "Example:\n  freshet group describe billing")]
    Describe {
        #[command(flatten)]
        conn: ConnArgs,
        /// Group id
        group: String,
    },
    /// Move a group's committed offsets (the group must have no active members)
    #[command(
        after_help = "Examples:\n  \
            freshet group reset-offsets billing --topic orders --to-earliest\n  \
            freshet group reset-offsets billing --topic orders --partition 0 --to-offset 100",
        group(ArgGroup::new("target").required(true)
            .args(["to_earliest", "to_latest", "to_offset", "shift_by"]))
    )]
    ResetOffsets {
        #[command(flatten)]
        conn: ConnArgs,
        /// Group id
        group: String,
        /// Topic whose offsets to move
        #[arg(long, short = 't')]
        topic: String,
        /// Only these partitions (repeatable; default all)
        #[arg(long, short = 'p')]
        partition: Vec<i32>,
        /// To the log start
        #[arg(long)]
        to_earliest: bool,
        /// To the log end
        #[arg(long)]
        to_latest: bool,
        /// To this absolute offset
        #[arg(long)]
        to_offset: Option<i64>,
        /// Move the committed offset by N (may be negative)
        #[arg(long, allow_hyphen_values = true)]
        shift_by: Option<i64>,
    },
    /// Delete a group (it must have no active members)
    #[command(after_help = "Example:\n  freshet group delete billing")]
    Delete {
        #[command(flatten)]
        conn: ConnArgs,
        /// Group id
        group: String,
    },
}

pub async fn run(cmd: GroupCommand) -> Result<(), ClientError> {
    match cmd {
        GroupCommand::List { conn } => {
            let client = Client::new(conn.client_config());
            let groups = admin::list_groups(&client).await?;
            let rows: Vec<Vec<String>> = groups
                .into_iter()
                .map(|g| {
                    vec![
                        g.group_id,
                        if g.state.is_empty() {
                            "-".into()
                        } else {
                            g.state
                        },
                        g.protocol_type,
                    ]
                })
                .collect();
            print_table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows);
            Ok(())
        }
        GroupCommand::Describe { conn, group } => {
            let client = Client::new(conn.client_config());
            let info = admin::describe_group(&client, &group).await?;
            let committed = admin::fetch_committed(&client, &group).await?;
            if info.state == "Dead" && committed.is_empty() {
                return Err(ClientError::Other(format!("group {group} does not exist")));
            }
            println!(
                "Group: {}\tState: {}\tProtocolType: {}\tProtocol: {}\tMembers: {}",
                info.group_id,
                info.state,
                if info.protocol_type.is_empty() {
                    "-"
                } else {
                    info.protocol_type.as_str()
                },
                if info.protocol.is_empty() {
                    "-"
                } else {
                    info.protocol.as_str()
                },
                info.members.len()
            );
            // Owner of each partition, from the members' assignments.
            let mut owner: BTreeMap<(String, i32), (String, String, String)> = BTreeMap::new();
            for m in &info.members {
                for (t, ps) in &m.assignment {
                    for p in ps {
                        owner.insert(
                            (t.clone(), *p),
                            (
                                m.member_id.clone(),
                                m.client_id.clone(),
                                m.client_host.trim_start_matches('/').to_string(),
                            ),
                        );
                    }
                }
            }
            let mut topics: BTreeSet<String> = committed.keys().cloned().collect();
            topics.extend(owner.keys().map(|(t, _)| t.clone()));
            let mut rows = Vec::new();
            for t in topics {
                let mut parts: BTreeSet<i32> = committed
                    .get(&t)
                    .map(|m| m.keys().copied().collect())
                    .unwrap_or_default();
                parts.extend(owner.keys().filter(|(ot, _)| *ot == t).map(|(_, p)| *p));
                let parts: Vec<i32> = parts.into_iter().collect();
                let ends = list_offsets(&client, &t, &parts, -1)
                    .await
                    .unwrap_or_default();
                for p in parts {
                    let cur = committed.get(&t).and_then(|m| m.get(&p)).copied();
                    let end = ends.get(&p).copied();
                    let lag = match (cur, end) {
                        (Some(c), Some(e)) => (e - c).max(0).to_string(),
                        _ => "-".into(),
                    };
                    let (member, client, host) = owner
                        .get(&(t.clone(), p))
                        .cloned()
                        .unwrap_or_else(|| ("-".into(), "-".into(), "-".into()));
                    rows.push(vec![
                        t.clone(),
                        p.to_string(),
                        cur.map_or("-".into(), |c| c.to_string()),
                        end.map_or("-".into(), |e| e.to_string()),
                        lag,
                        member,
                        host,
                        client,
                    ]);
                }
            }
            print_table(
                &[
                    "TOPIC",
                    "PARTITION",
                    "CURRENT-OFFSET",
                    "LOG-END-OFFSET",
                    "LAG",
                    "CONSUMER-ID",
                    "HOST",
                    "CLIENT-ID",
                ],
                &rows,
            );
            Ok(())
        }
        GroupCommand::ResetOffsets {
            conn,
            group,
            topic,
            partition,
            to_earliest,
            to_latest,
            to_offset,
            shift_by,
        } => {
            let client = Client::new(conn.client_config());
            let meta = client.refresh_topic(&topic).await?;
            let parts: Vec<i32> = if partition.is_empty() {
                meta.partitions.iter().map(|p| p.id).collect()
            } else {
                partition
            };
            let starts = list_offsets(&client, &topic, &parts, -2).await?;
            let ends = list_offsets(&client, &topic, &parts, -1).await?;
            let committed = admin::fetch_committed(&client, &group).await?;
            let mut new = Vec::new();
            for p in &parts {
                let lo = starts.get(p).copied().unwrap_or(0);
                let hi = ends.get(p).copied().unwrap_or(0);
                let target = if to_earliest {
                    lo
                } else if to_latest {
                    hi
                } else if let Some(o) = to_offset {
                    o
                } else {
                    let cur = committed
                        .get(&topic)
                        .and_then(|m| m.get(p))
                        .copied()
                        .unwrap_or(lo);
                    cur + shift_by.unwrap_or(0)
                };
                new.push((topic.clone(), *p, target.clamp(lo, hi)));
            }
            admin::commit_offsets(&client, &group, -1, "", &new).await?;
            let rows: Vec<Vec<String>> = new
                .iter()
                .map(|(t, p, o)| vec![t.clone(), p.to_string(), o.to_string()])
                .collect();
            print_table(&["TOPIC", "PARTITION", "NEW-OFFSET"], &rows);
            Ok(())
        }
        GroupCommand::Delete { conn, group } => {
            let client = Client::new(conn.client_config());
            admin::delete_group(&client, &group).await?;
            println!("deleted group {group}");
            Ok(())
        }
    }
}
