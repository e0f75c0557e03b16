package mpp.stack.neo4j;

import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.neo4j.cli.ExecutionContext;
import org.neo4j.commandline.admin.security.SetInitialPasswordCommand;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.graphdb.Result;
import org.neo4j.logging.log4j.Log4jLogProvider;

import picocli.CommandLine;

/**
 * Runs a single-node Neo4j Community DBMS (embedded API) with the Bolt connector
 * on 127.0.0.1, for local development and CI.
 *
 * <pre>
 * usage: Neo4jLauncher [DATA_DIR] [BOLT_PORT] [HTTP_PORT] [--password PW]
 *   DATA_DIR   env NEO4J_DATA_DIR  (required)  becomes the Neo4j home:
 *              DATA_DIR/conf/neo4j.conf (generated), DATA_DIR/data, DATA_DIR/logs/debug.log
 *   BOLT_PORT  env NEO4J_BOLT_PORT (default 7687)
 *   HTTP_PORT  env NEO4J_HTTP_PORT (default 0 = HTTP disabled)
 *   password   env NEO4J_PASSWORD  (unset/empty = auth disabled). When set, auth is
 *              enabled and user 'neo4j' gets this as its INITIAL password (only applied
 *              while the neo4j user still has the factory default password).
 *   tuning     env NEO4J_PAGECACHE (256m), NEO4J_TX_TOTAL_MAX (256m), NEO4J_TX_MAX (128m)
 * </pre>
 *
 * Prints {@code NEO4J READY bolt://127.0.0.1:PORT} once the default database is online.
 * SIGTERM/SIGINT run a shutdown hook that shuts the DBMS down cleanly.
 */
public final class Neo4jLauncher {

    private static final String DEFAULT_DB = "neo4j";

    private Neo4jLauncher() {}

    public static void main(String[] argv) throws Exception {
        List<String> positional = new ArrayList<>();
        String password = env("NEO4J_PASSWORD", null);
        for (int i = 0; i < argv.length; i++) {
            String a = argv[i];
            if (a.equals("--password") && i + 1 < argv.length) {
                password = argv[++i];
            } else if (a.startsWith("--password=")) {
                password = a.substring("--password=".length());
            } else if (a.equals("-h") || a.equals("--help")) {
                System.out.println("usage: Neo4jLauncher DATA_DIR [BOLT_PORT] [HTTP_PORT] [--password PW]");
                return;
            } else {
                positional.add(a);
            }
        }
        if (password != null && password.isEmpty()) {
            password = null;
        }
        String dataDirArg = positional.size() > 0 ? positional.get(0) : env("NEO4J_DATA_DIR", null);
        if (dataDirArg == null) {
            System.err.println("Neo4jLauncher: DATA_DIR argument (or NEO4J_DATA_DIR) is required");
            System.exit(2);
        }
        int boltPort = Integer.parseInt(positional.size() > 1 ? positional.get(1) : env("NEO4J_BOLT_PORT", "7687"));
        int httpPort = Integer.parseInt(positional.size() > 2 ? positional.get(2) : env("NEO4J_HTTP_PORT", "0"));

        Path home = Paths.get(dataDirArg).toAbsolutePath().normalize();
        Path confDir = home.resolve("conf");
        Files.createDirectories(confDir);
        Path conf = confDir.resolve("neo4j.conf");
        Files.writeString(conf, renderConfig(boltPort, httpPort, password != null), StandardCharsets.UTF_8);

        // The system database is created on the very first start; the initial password
        // must be in place (data/dbms/auth.ini) before that, exactly like
        // `neo4j-admin dbms set-initial-password`.
        boolean fresh = !Files.exists(home.resolve("data").resolve("databases").resolve("system"));
        if (password != null && fresh) {
            setInitialPassword(home, confDir, password);
        }

        long t0 = System.nanoTime();
        PrintStream out = System.out;
        DatabaseManagementService dbms;
        try {
            dbms = new DatabaseManagementServiceBuilder(home)
                    .setUserLogProvider(new Log4jLogProvider(out))
                    .loadPropertiesFromFile(conf)
                    .build();
        } catch (Throwable t) {
            // e.g. port already in use. Neo4j leaves non-daemon threads behind, so a plain
            // exception out of main would keep the JVM alive forever: exit explicitly.
            t.printStackTrace(out);
            out.println("NEO4J FAILED: " + rootCause(t));
            out.flush();
            System.exit(1);
            return;
        }

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            out.println("NEO4J STOPPING");
            out.flush();
            try {
                dbms.shutdown();
                out.println("NEO4J STOPPED");
            } catch (Throwable t) {
                out.println("NEO4J SHUTDOWN FAILED: " + t);
                t.printStackTrace(out);
            } finally {
                out.flush();
                stopped.countDown();
            }
        }, "neo4j-shutdown-hook"));

        GraphDatabaseService db = dbms.database(DEFAULT_DB);
        if (!db.isAvailable(TimeUnit.MINUTES.toMillis(2))) {
            out.println("NEO4J FAILED: database '" + DEFAULT_DB + "' not available");
            out.flush();
            System.exit(1);
        }
        if (password != null && !fresh) {
            applyPasswordIfStillDefault(dbms, password, out);
        }

        long ms = (System.nanoTime() - t0) / 1_000_000;
        out.println("NEO4J READY bolt://127.0.0.1:" + boltPort
                + (httpPort > 0 ? " http://127.0.0.1:" + httpPort : "")
                + " auth=" + (password != null ? "on" : "off")
                + " home=" + home + " startup_ms=" + ms);
        out.flush();
        stopped.await();
    }

    static String renderConfig(int boltPort, int httpPort, boolean auth) {
        String pagecache = env("NEO4J_PAGECACHE", "256m");
        String txTotal = env("NEO4J_TX_TOTAL_MAX", "256m");
        String txMax = env("NEO4J_TX_MAX", "128m");
        StringBuilder sb = new StringBuilder();
        sb.append("# Generated by mpp.stack.neo4j.Neo4jLauncher on every start; edits are overwritten.\n");
        line(sb, "server.default_listen_address", "127.0.0.1");
        line(sb, "server.default_advertised_address", "127.0.0.1");
        line(sb, "server.bolt.enabled", "true");
        line(sb, "server.bolt.listen_address", "127.0.0.1:" + boltPort);
        line(sb, "server.bolt.advertised_address", "127.0.0.1:" + boltPort);
        line(sb, "server.bolt.tls_level", "DISABLED");
        line(sb, "server.http.enabled", Boolean.toString(httpPort > 0));
        if (httpPort > 0) {
            line(sb, "server.http.listen_address", "127.0.0.1:" + httpPort);
            line(sb, "server.http.advertised_address", "127.0.0.1:" + httpPort);
        }
        line(sb, "server.https.enabled", "false");
        line(sb, "dbms.security.auth_enabled", Boolean.toString(auth));
        // Small footprint for a 2-core dev/CI box.
        line(sb, "server.memory.pagecache.size", pagecache);
        line(sb, "dbms.memory.transaction.total.max", txTotal);
        line(sb, "db.memory.transaction.max", txMax);
        // Defaults preallocate 256 MB per tx log file per database (neo4j + system).
        line(sb, "db.tx_log.preallocate", "false");
        line(sb, "db.tx_log.rotation.size", "64M");
        line(sb, "db.tx_log.rotation.retention_policy", "256M size");
        line(sb, "server.bolt.thread_pool_max_size", "64");
        line(sb, "dbms.usage_report.enabled", "false");
        // Netty's graceful shutdown waits a 5 s quiet period per event-loop group (twice),
        // which makes SIGTERM take ~11 s; stores are already checkpointed at that point.
        line(sb, "internal.dbms.bolt.netty_server_shutdown_quiet_period", "0");
        line(sb, "internal.dbms.bolt.netty_server_shutdown_timeout", "5s");
        return sb.toString();
    }

    private static void line(StringBuilder sb, String key, String value) {
        sb.append(key).append('=').append(value).append('\n');
    }

    private static void setInitialPassword(Path home, Path confDir, String password) {
        ExecutionContext ctx = new ExecutionContext(home, confDir);
        int rc = new CommandLine(new SetInitialPasswordCommand(ctx)).execute(password);
        if (rc != 0) {
            System.err.println("NEO4J FAILED: set-initial-password exited " + rc
                    + " (passwords need >= 8 characters by default)");
            System.exit(2);
        }
    }

    /** For a store created without a password: set it now if 'neo4j' still has the default one. */
    private static void applyPasswordIfStillDefault(DatabaseManagementService dbms, String password, PrintStream out) {
        GraphDatabaseService system = dbms.database("system");
        boolean changeRequired = system.executeTransactionally(
                "SHOW USERS YIELD user, passwordChangeRequired WHERE user = 'neo4j' RETURN passwordChangeRequired",
                Map.of(),
                (Result r) -> r.hasNext() && Boolean.TRUE.equals(r.next().get("passwordChangeRequired")));
        if (changeRequired) {
            system.executeTransactionally(
                    "ALTER USER neo4j SET PASSWORD $pw CHANGE NOT REQUIRED", Map.of("pw", password));
            out.println("NEO4J: initial password applied to user neo4j");
        } else {
            out.println("NEO4J: user neo4j already has a non-default password; NEO4J_PASSWORD not re-applied");
        }
    }

    private static String rootCause(Throwable t) {
        while (t.getCause() != null && t.getCause() != t) {
            t = t.getCause();
        }
        return t.toString();
    }

    private static String env(String name, String dflt) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? dflt : v;
    }
}
