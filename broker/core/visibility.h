// Who may see what of a tenant (in the status, and in usage and bills): root and the
// broker's own uid see every tenant; anyone else sees the tenants they are a member
// of, and only the node's totals of the rest. A member is a uid or primary gid the
// tenant's config lists (`uids`, `gids`), or a uid that runs a process in the tenant
// (what a user started is theirs to see; a tenant listing no uids or gids is open to
// anyone, so anyone who joins it sees it). A viewer who came through a tenant's or a
// container's socket is confined to that socket's tenant, whatever its uid (root in a
// container). Pure: the caller says who is in a tenant.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gpushare::broker {

struct Viewer {
  uint32_t uid = 0;
  uint32_t gid = 0;  // primary (SO_PEERCRED)
  bool confined = false;  // came through a tenant's or container's socket: sees only…
  std::string tenant{};   // …this tenant ("" : none, the socket is not bound yet)
};

// What the rule knows of one tenant. Null lists: the config names none.
struct TenantMembers {
  const std::vector<uint32_t>* uids = nullptr;  // TenantPolicy::uids
  const std::vector<uint32_t>* gids = nullptr;  // TenantPolicy::gids
  std::vector<uint32_t> running_uids;           // uids of the tenant's processes
  std::string name{};                           // the tenant's (for a confined viewer)
};

// Root and the broker's uid, unconfined.
bool SeesEverything(const Viewer& viewer, uint32_t broker_uid);
bool MaySee(const Viewer& viewer, uint32_t broker_uid, const TenantMembers& tenant);

}  // namespace gpushare::broker
