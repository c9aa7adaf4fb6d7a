// ferryd: the management server. `ferryd --config ferryd.json` (docs/control-plane.md).
// Runs until SIGINT or SIGTERM, then stops serving and exits 0.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "server/config.h"
#include "server/ferryd.h"
#include "store/store.h"

int main(int argc, char** argv) {
  CLI::App app{"ferryd: Ferry's management server (REST API, scheduler, migrations)"};
  std::string config_path;
  app.add_option("--config", config_path, "config file (JSON)")->required();
  CLI11_PARSE(app, argc, argv);

  // Block the stop signals in every thread; the main thread waits for them below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  ferry::Result<ferry::server::ServerConfig> config = ferry::server::LoadServerConfig(config_path);
  if (!config.ok()) {
    fprintf(stderr, "ferryd: %s\n", config.status().ToString().c_str());
    return ferry::ExitCodeFor(config.status().code());
  }
  ferry::Result<std::unique_ptr<ferry::Store>> store = ferry::OpenSqliteStore(config->database);
  if (!store.ok()) {
    fprintf(stderr, "ferryd: database %s: %s\n", config->database.c_str(),
            store.status().ToString().c_str());
    return ferry::ExitCodeFor(store.status().code());
  }
  int64_t timeout = config->agent_timeout_ms;
  ferry::server::Ferryd server(
      *config, std::move(*store), [timeout](const std::string& url, const std::string& token) {
        return ferry::server::MakeHttpAgentLink(url, token, timeout);
      });
  ferry::Status s = server.Start();
  if (!s.ok()) {
    fprintf(stderr, "ferryd: %s\n", s.ToString().c_str());
    return ferry::ExitCodeFor(s.code());
  }
  fprintf(stderr, "ferryd: listening on %s (port %d)\n", config->listen.c_str(), server.port());
  int sig = 0;
  sigwait(&stop_signals, &sig);
  fprintf(stderr, "ferryd: signal %d, stopping\n", sig);
  server.Stop();
  return 0;
}
