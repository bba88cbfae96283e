//! [`Cluster`]: a three-node RabbitMQ cluster of a test's own, started with
//! `scripts/cluster` on free ports, in a directory and under node names of
//! its own (so nothing else on the machine is disturbed), and stopped and
//! removed when dropped, also when the test panics.
//!
//! Starting one takes some twenty seconds; the methods block (run them in
//! `spawn_blocking` from async code, [`Cluster::start`] does).

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

/// A running cluster; node numbers are 1, 2 and 3.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    name: String,
    amqp_ports: [u16; 3],
    dist_ports: [u16; 3],
    /// Set once `down` ran, so `Drop` has nothing to do.
    down: bool,
}

impl Cluster {
    /// Starts the three nodes and joins them (`scripts/cluster up`).
    pub async fn start() -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut cluster = Self {
            dir: std::env::temp_dir().join(format!("testkit-cluster-{}", &id[..12])),
            name: format!("t{}n", &id[..8]),
            amqp_ports: [crate::free_port(), crate::free_port(), crate::free_port()],
            dist_ports: [crate::free_port(), crate::free_port(), crate::free_port()],
            down: false,
        };
        let up = tokio::task::spawn_blocking({
            let command = cluster.command(&["up"]);
            move || run(command)
        })
        .await?;
        if let Err(err) = up {
            // Stop whatever came up before the failure.
            cluster.stop_all();
            return Err(err);
        }
        Ok(cluster)
    }

    /// The `AMQP_URL` of the three nodes, node 1 first.
    pub fn urls(&self) -> String {
        self.amqp_ports
            .iter()
            .map(|port| format!("amqp://guest:guest@127.0.0.1:{port}/%2f"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node whose AMQP listener is `addr` (`host:port`, as `/readyz`
    /// names it).
    pub fn node_at(&self, addr: &str) -> Option<usize> {
        let port: u16 = addr.rsplit_once(':')?.1.parse().ok()?;
        self.amqp_ports
            .iter()
            .position(|p| *p == port)
            .map(|i| i + 1)
    }

    /// SIGKILLs node `n`'s Erlang VM and waits until it is gone.
    pub fn kill(&self, n: usize) -> anyhow::Result<()> {
        run(self.command(&["kill", &n.to_string()]))
    }

    /// Starts node `n` again and waits until it runs (it rejoins the
    /// cluster with its data).
    pub fn restart(&self, n: usize) -> anyhow::Result<()> {
        run(self.command(&["start", &n.to_string()]))
    }

    /// The node leading `queue`, asked of any node that answers.
    pub fn leader(&self, queue: &str) -> anyhow::Result<usize> {
        let out = self.ctl_any(&["list_queues", "--no-table-headers", "name", "leader"])?;
        out.lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(name, _)| name.trim() == queue)
            .and_then(|(_, leader)| self.node_number(leader.trim()))
            .with_context(|| format!("no leader of {queue} in: {out}"))
    }

    /// The node of each consumer of `queue` (the node its channel is on).
    pub fn consumer_nodes(&self, queue: &str) -> anyhow::Result<Vec<usize>> {
        let out = self.ctl_any(&[
            "list_consumers",
            "--no-table-headers",
            "queue_name",
            "channel_pid",
        ])?;
        Ok(out
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .filter(|(name, _)| name.trim() == queue)
            // A pid reads `<t1234abcdn2@localhost.1670000000.512.0>`.
            .filter_map(|(_, pid)| self.node_number(pid.trim().trim_start_matches('<')))
            .collect())
    }

    /// Node number of a node name (`<name><n>@localhost…`).
    fn node_number(&self, node: &str) -> Option<usize> {
        let rest = node.strip_prefix(&self.name)?;
        let (n, _) = rest.split_once('@')?;
        n.parse().ok().filter(|n| (1..=3).contains(n))
    }

    /// `rabbitmqctl` on the first node that answers.
    fn ctl_any(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut last = None;
        for n in 1..=3 {
            let mut full = vec!["ctl".to_owned(), n.to_string()];
            full.extend(args.iter().map(|a| (*a).to_owned()));
            let full: Vec<&str> = full.iter().map(String::as_str).collect();
            match output(self.command(&full)) {
                Ok(out) => return Ok(out),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no node answered")))
    }

    fn command(&self, args: &[&str]) -> Command {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster");
        let ports = |p: &[u16; 3]| p.map(|p| p.to_string()).join(",");
        let mut command = Command::new(script);
        command
            .args(args)
            .env("CLUSTER_DIR", &self.dir)
            .env("CLUSTER_NAME", &self.name)
            .env("CLUSTER_AMQP_PORTS", ports(&self.amqp_ports))
            .env("CLUSTER_DIST_PORTS", ports(&self.dist_ports))
            .stdin(std::process::Stdio::null());
        command
    }

    fn stop_all(&mut self) {
        if self.down {
            return;
        }
        self.down = true;
        if let Err(err) = run(self.command(&["down"])) {
            eprintln!(
                "testkit: stopping the cluster in {}: {err:#}",
                self.dir.display()
            );
        }
    }

    /// Stops every node and removes the cluster's directory.
    pub async fn stop(mut self) {
        let command = self.command(&["down"]);
        self.down = true;
        if let Ok(Err(err)) = tokio::task::spawn_blocking(move || run(command)).await {
            eprintln!("testkit: stopping the cluster: {err:#}");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    output(command).map(|_| ())
}

fn output(mut command: Command) -> anyhow::Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{:?} failed ({}): {}{}",
        command.get_args().collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
