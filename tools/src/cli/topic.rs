//! `freshet topic create|list|describe|delete|alter-config|reassign|reassignments`.

use clap::Subcommand;

use super::{parse_kv, print_table, ConnArgs};
use crate::client::consumer::list_offsets;
use crate::client::{admin, Client, ClientError};

/// `freshet topic ...`
#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic
    #[command(after_help = "Example:\n  \
        freshet topic create orders --partitions 16 --replication-factor 1 \
        --config retention.ms=86400000")]
    Create {
        #[command(flatten)]
        conn: ConnArgs,
        /// Topic name
        name: String,
        /// Number of partitions
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: i32,
        /// Replication factor
        #[arg(long, short = 'r', default_value_t = 1)]
        replication_factor: i16,
        /// Topic config override key=value (repeatable)
        #[arg(long = "config", short = 'c', value_parser = parse_kv)]
        configs: Vec<(String, String)>,
        /// Succeed if the topic already exists
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topic names
    #[command(after_help = "Example:\n  freshet topic list --brokers 127.0.0.1:9092")]
    List {
        #[command(flatten)]
        conn: ConnArgs,
        /// Include internal topics such as __consumer_offsets
        #[arg(long)]
        internal: bool,
    },
    /// Show partitions (leader, replicas, ISR, start/end offsets) and configs
    #[command(after_help = "Example:\n  freshet topic describe orders")]
    Describe {
        #[command(flatten)]
        conn: ConnArgs,
        /// Topic name
        name: String,
    },
    /// Delete a topic
    #[command(after_help = "Example:\n  freshet topic delete orders")]
    Delete {
        #[command(flatten)]
        conn: ConnArgs,
        /// Topic name
        name: String,
    },
    /// Move a partition to other brokers, or cancel its move (KIP-455)
    #[command(after_help = "Examples:\n  \
        freshet topic reassign orders --partition 0 --replicas 3,1,2\n  \
        freshet topic reassign orders --partition 0 --cancel\n\
        The partition's leader adds the new replicas, waits until they caught up, then \
        removes the old ones; follow it with `freshet topic reassignments`.")]
    Reassign {
        #[command(flatten)]
        conn: ConnArgs,
        /// Topic name
        name: String,
        /// Partition index
        #[arg(long, short = 'p')]
        partition: i32,
        /// New replica broker ids, preferred leader first (comma-separated)
        #[arg(
            long,
            value_delimiter = ',',
            required_unless_present = "cancel",
            conflicts_with = "cancel"
        )]
        replicas: Vec<i32>,
        /// Cancel the ongoing reassignment (back to the original replicas)
        #[arg(long)]
        cancel: bool,
        /// Wait until the reassignment completed (or was cancelled)
        #[arg(long)]
        wait: bool,
    },
    /// List ongoing partition reassignments (KIP-455)
    #[command(after_help = "Example:\n  freshet topic reassignments --brokers 127.0.0.1:9092")]
    Reassignments {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Set or remove topic config overrides
    #[command(after_help = "Example:\n  \
        freshet topic alter-config orders --set retention.ms=3600000 --delete cleanup.policy")]
    AlterConfig {
        #[command(flatten)]
        conn: ConnArgs,
        /// Topic name
        name: String,
        /// key=value to set (repeatable)
        #[arg(long = "set", value_parser = parse_kv)]
        set: Vec<(String, String)>,
        /// key to remove (back to the broker default; repeatable)
        #[arg(long = "delete")]
        delete: Vec<String>,
    },
}

pub async fn run(cmd: TopicCommand) -> Result<(), ClientError> {
    match cmd {
        TopicCommand::Create {
            conn,
            name,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
        } => {
            if partitions < 1 {
                return Err(ClientError::Other("--partitions must be at least 1".into()));
            }
            let client = Client::new(conn.client_config());
            match admin::create_topic(&client, &name, partitions, replication_factor, &configs)
                .await
            {
                Ok(()) => {
                    println!("created topic {name} with {partitions} partitions");
                    Ok(())
                }
                Err(e)
                    if if_not_exists
                        && e.code() == Some(crate::client::codes::TOPIC_ALREADY_EXISTS) =>
                {
                    println!("topic {name} already exists");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        TopicCommand::List { conn, internal } => {
            let client = Client::new(conn.client_config());
            let meta = client.metadata(None, false).await?;
            let mut names: Vec<&str> = meta
                .topics
                .iter()
                .filter(|t| internal || !t.is_internal)
                .map(|t| t.name.as_str())
                .collect();
            names.sort();
            for n in names {
                println!("{n}");
            }
            Ok(())
        }
        TopicCommand::Describe { conn, name } => {
            let client = Client::new(conn.client_config());
            let meta = client.refresh_topic(&name).await?;
            let ids: Vec<i32> = meta.partitions.iter().map(|p| p.id).collect();
            let starts = list_offsets(&client, &name, &ids, -2).await?;
            let ends = list_offsets(&client, &name, &ids, -1).await?;
            let rf = meta.partitions.first().map_or(0, |p| p.replicas.len());
            println!(
                "Topic: {}\tPartitionCount: {}\tReplicationFactor: {}",
                meta.name,
                meta.partitions.len(),
                rf
            );
            let join = |v: &[i32]| {
                v.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let rows: Vec<Vec<String>> = meta
                .partitions
                .iter()
                .map(|p| {
                    vec![
                        p.id.to_string(),
                        p.leader.to_string(),
                        join(&p.replicas),
                        join(&p.isr),
                        starts.get(&p.id).map_or("-".into(), |o| o.to_string()),
                        ends.get(&p.id).map_or("-".into(), |o| o.to_string()),
                    ]
                })
                .collect();
            print_table(
                &[
                    "PARTITION",
                    "LEADER",
                    "REPLICAS",
                    "ISR",
                    "START-OFFSET",
                    "END-OFFSET",
                ],
                &rows,
            );
            match admin::describe_topic_configs(&client, &name).await {
                Ok(cfgs) => {
                    let overrides: Vec<String> = cfgs
                        .iter()
                        .filter(|c| !c.is_default)
                        .map(|c| {
                            let v = if c.sensitive {
                                "(sensitive)".to_string()
                            } else {
                                c.value.clone().unwrap_or_default()
                            };
                            format!("{}={}", c.name, v)
                        })
                        .collect();
                    println!(
                        "Configs: {}",
                        if overrides.is_empty() {
                            "(defaults)".to_string()
                        } else {
                            overrides.join(",")
                        }
                    );
                }
                Err(ClientError::Unsupported { .. }) => {}
                Err(e) => return Err(e),
            }
            Ok(())
        }
        TopicCommand::Reassign {
            conn,
            name,
            partition,
            replicas,
            cancel,
            wait,
        } => {
            let client = Client::new(conn.client_config());
            let target = (!cancel).then_some(replicas.as_slice());
            admin::alter_reassignment(&client, &name, partition, target).await?;
            match target {
                Some(r) => println!("reassignment of {name}-{partition} to {r:?} started"),
                None => println!("reassignment of {name}-{partition} cancelled"),
            }
            if wait {
                let asked = [(name.clone(), vec![partition])];
                loop {
                    if admin::list_reassignments(&client, Some(&asked))
                        .await?
                        .is_empty()
                    {
                        break;
                    }
                    glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
                }
                println!("reassignment of {name}-{partition} done");
            }
            Ok(())
        }
        TopicCommand::Reassignments { conn } => {
            let client = Client::new(conn.client_config());
            let list = admin::list_reassignments(&client, None).await?;
            let join = |v: &[i32]| {
                v.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|r| {
                    vec![
                        r.topic.clone(),
                        r.partition.to_string(),
                        join(&r.replicas),
                        join(&r.adding),
                        join(&r.removing),
                    ]
                })
                .collect();
            print_table(
                &["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"],
                &rows,
            );
            Ok(())
        }
        TopicCommand::Delete { conn, name } => {
            let client = Client::new(conn.client_config());
            admin::delete_topic(&client, &name).await?;
            println!("deleted topic {name}");
            Ok(())
        }
        TopicCommand::AlterConfig {
            conn,
            name,
            set,
            delete,
        } => {
            if set.is_empty() && delete.is_empty() {
                return Err(ClientError::Other(
                    "nothing to change: give --set key=value or --delete key".into(),
                ));
            }
            let client = Client::new(conn.client_config());
            admin::alter_topic_configs(&client, &name, &set, &delete).await?;
            println!("updated configs of topic {name}");
            Ok(())
        }
    }
}
