// ferry-agent --config agent.json: serves the agent API (docs/control-plane.md) for one libvirt
// host until SIGTERM or SIGINT, then exits 0. Jobs still running at that moment die with the
// process (their libvirt calls with it); the restarted agent reports them as failed
// (agent_service.h).
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "agent/agent_config.h"
#include "agent/agent_service.h"
#include "agent/cold_job.h"
#include "agent/export_registry.h"
#include "agent/host_ops.h"
#include "agent/migration_job.h"

int main(int argc, char** argv) {
  CLI::App app("ferry-agent: runs migration jobs and reports the inventory of one libvirt host");
  std::string config_path;
  app.add_option("--config", config_path, "agent configuration file (JSON)")->required();
  app.set_version_flag("--version", "ferry-agent " FERRY_VERSION);
  CLI11_PARSE(app, argc, argv);

  ferry::Result<ferry::agent::AgentConfig> config = ferry::agent::LoadAgentConfig(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "ferry-agent: %s\n", config.status().ToString().c_str());
    return ferry::ExitCodeFor(config.status().code());
  }

  // Block the stop signals in every thread (the server's and the jobs' inherit the mask) and
  // wait for them here.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  ferry::agent::AgentServiceOptions options;
  options.config = *config;
  // Cold jobs run on the target host's agent (cold_job.h); every other kind on the source's.
  ferry::agent::ColdJobEnv cold_env;
  cold_env.libvirt_uri = config->libvirt_uri;
  cold_env.state_dir = config->state_dir;
  cold_env.default_domain_type = config->default_domain_type;
  cold_env.shares = config->shares;
  cold_env.copy_workers = config->copy_workers;
  options.runner = [cold_env](const ferry::agent::MigrationJobSpec& spec,
                              ferry::agent::JobContext& ctx) {
    if (spec.kind == ferry::agent::MigrationKind::kCold) {
      return ferry::agent::RunColdJob(spec, cold_env, ctx);
    }
    return ferry::agent::RunMigrationJob(spec, ctx);
  };
  options.host = ferry::agent::NewLibvirtHostOps(config->libvirt_uri);
  // Cold migrations' source side: the shares of the config, NBD exports on data_address.
  ferry::agent::ExportRegistryOptions exports;
  exports.state_dir = config->state_dir;
  exports.data_address = config->data_address;
  exports.shares = config->shares;
  exports.host = ferry::agent::NewLibvirtExportHost(config->libvirt_uri);
  exports.log = [host_id = config->host_id](const std::string& line) {
    std::fprintf(stderr, "ferry-agent %s: %s\n", host_id.c_str(), line.c_str());
  };
  options.exports = std::make_unique<ferry::agent::ExportRegistry>(std::move(exports));
  auto service = std::make_unique<ferry::agent::AgentService>(std::move(options));
  ferry::Status started = service->Start();
  if (!started.ok()) {
    std::fprintf(stderr, "ferry-agent %s: %s\n", config->host_id.c_str(),
                 started.ToString().c_str());
    return ferry::ExitCodeFor(started.code());
  }

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  std::fprintf(stderr, "ferry-agent %s: signal %d, stopping\n", config->host_id.c_str(),
               signal_number);
  service->StopServing();
  const size_t running = service->RunningJobs();
  if (running > 0) {
    // Waiting could take minutes (a migration in flight); the job files already say
    // "running", which the next start turns into "failed".
    std::fprintf(stderr, "ferry-agent %s: exiting with %zu running job(s)\n",
                 config->host_id.c_str(), running);
    std::fflush(nullptr);
    std::_Exit(0);
  }
  service.reset();
  return 0;
}
