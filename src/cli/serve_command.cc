// ferry serve: export an image read-only over NBD until interrupted.
#include <csignal>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/image_options.h"
#include "cli/output.h"
#include "disk/image.h"
#include "nbd/nbd_server.h"

namespace ferry::cli {
namespace {

struct ServeArgs {
  std::string image, listen, socket, export_name, output = "text";
  ImageArgs open;
};

NbdServer* g_server = nullptr;

extern "C" void StopServer(int) {
  if (g_server != nullptr) g_server->RequestStop();  // async-signal-safe
}

int RunServe(const ServeArgs& a) {
  auto mode = ParseOutputMode(a.output);
  if (!mode.ok()) return ReportError(OutputMode::kText, "serve", mode.status());
  if (a.listen.empty() == a.socket.empty()) {
    return ReportError(*mode, "serve",
                       Status::InvalidArgument("give exactly one of --listen ADDR:PORT and "
                                               "--socket PATH"));
  }
  auto open = ToOpenOptions(a.open);
  if (!open.ok()) return ReportError(*mode, "serve", open.status());
  auto source = OpenImage(a.image, *open);
  if (!source.ok()) return ReportError(*mode, "serve", source.status());
  NbdServerOptions options;
  options.tcp_address = a.listen;
  options.unix_socket_path = a.socket;
  auto server = NbdServer::Listen(options);
  if (!server.ok()) return ReportError(*mode, "serve", server.status());
  std::shared_ptr<BlockSource> shared(std::move(*source));
  Status s = (*server)->Serve(shared, a.export_name, a.image);
  if (!s.ok()) return ReportError(*mode, "serve", s);
  g_server = server->get();
  std::signal(SIGINT, StopServer);
  std::signal(SIGTERM, StopServer);
  const std::string uri = (*server)->uri(a.export_name);
  if (*mode == OutputMode::kJson) {
    nlohmann::json j = {{"event", "listening"}, {"uri", uri}, {"size", shared->size()}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("serving %s read-only at %s\n", a.image.c_str(), uri.c_str());
  }
  std::fflush(stdout);
  s = (*server)->Run();
  (*server)->Stop();
  g_server = nullptr;
  if (!s.ok()) return ReportError(*mode, "serve", s);
  return 0;
}

}  // namespace

void AddServeCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand("serve", "Export an image read-only over NBD");
  cmd->add_option("IMAGE", args->image, "Image to export (any format Ferry reads)")->required();
  cmd->add_option("-f,--format", args->open.format, "Image format (probed when omitted)");
  cmd->add_option("--listen", args->listen, "TCP address, e.g. 127.0.0.1:10809 (port 0: any)");
  cmd->add_option("--socket", args->socket, "Unix socket path");
  cmd->add_option("--export", args->export_name, "Export name (default: empty, the default)");
  AddImageOptions(cmd, &args->open);
  cmd->add_option("--output", args->output, "text|json");
  cmd->callback([args, exit_code] { *exit_code = RunServe(*args); });
}

}  // namespace ferry::cli
