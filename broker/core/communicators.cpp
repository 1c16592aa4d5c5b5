// Collective communicators as their ranks report them (see communicators.h).
#include "communicators.h"

#include <algorithm>

namespace gpushare::broker {

std::string Communicators::Warning(const Communicator& comm) const {
  const auto& m = comm.members;
  for (size_t i = 0; i < m.size(); ++i)
    for (size_t j = i + 1; j < m.size(); ++j) {
      if (m[i].gpu < 0 || m[j].gpu < 0) continue;
      const std::string a = "rank " + std::to_string(m[i].rank) + " (pid " + std::to_string(m[i].pid) + ", GPU " +
                            std::to_string(m[i].gpu) + ")";
      const std::string b = "rank " + std::to_string(m[j].rank) + " (pid " + std::to_string(m[j].pid) + ", GPU " +
                            std::to_string(m[j].gpu) + ")";
      if (m[i].gpu == m[j].gpu) return "communicator spans " + a + " and " + b + ": two ranks on one GPU";
      if (!topology_->p2p(m[i].gpu, m[j].gpu))
        return "communicator spans GPUs without P2P: " + a + " and " + b + " exchange data through host memory";
    }
  return "";
}

std::string Communicators::Report(ClientId conn, const ClientRecord& c, const protocol::Comm& m) {
  constexpr size_t kMaxCommunicators = 4096;  // node-wide: a client cannot grow the broker without bound
  constexpr size_t kMaxMemberships = 256;     // per client
  const std::pair<std::string, uint64_t> key{c.tenant, m.comm_id};
  if (m.event == static_cast<uint32_t>(protocol::CommEvent::kLeft)) {
    if (auto it = comms_.find(key); it != comms_.end()) {
      auto& members = it->second.members;
      members.erase(std::remove_if(members.begin(), members.end(),
                                   [&](const auto& x) { return x.client == conn && x.handle == m.handle; }),
                    members.end());
      if (members.empty()) comms_.erase(it);
    }
    return "";
  }
  if (m.event != static_cast<uint32_t>(protocol::CommEvent::kJoined)) return "";
  size_t mine = 0;
  for (const auto& [k, comm] : comms_)
    for (const auto& x : comm.members) mine += x.client == conn;
  if (mine >= kMaxMemberships || (!comms_.count(key) && comms_.size() >= kMaxCommunicators))
    return "the broker records no more communicators for this client";
  Communicator& comm = comms_[key];
  comm.nranks = m.nranks;
  const int gpu = m.device < c.physical.size() ? c.physical[m.device] : -1;
  comm.members.push_back({conn, c.peer.pid, m.rank, static_cast<int>(m.device), gpu, m.handle});
  return Warning(comm);
}

void Communicators::RemoveClient(ClientId conn) {
  for (auto c = comms_.begin(); c != comms_.end();) {
    auto& m = c->second.members;
    m.erase(std::remove_if(m.begin(), m.end(), [&](const Communicator::Member& x) { return x.client == conn; }),
            m.end());
    c = m.empty() ? comms_.erase(c) : std::next(c);
  }
}

}  // namespace gpushare::broker
