// Who may see which tenant (see visibility.h).
#include "visibility.h"

#include <algorithm>

namespace gpushare::broker {
namespace {

bool Lists(const std::vector<uint32_t>* list, uint32_t id) {
  return list != nullptr && std::find(list->begin(), list->end(), id) != list->end();
}

}  // namespace

bool SeesEverything(const Viewer& viewer, uint32_t broker_uid) {
  return !viewer.confined && (viewer.uid == 0 || viewer.uid == broker_uid);
}

bool MaySee(const Viewer& viewer, uint32_t broker_uid, const TenantMembers& tenant) {
  if (viewer.confined) return !viewer.tenant.empty() && viewer.tenant == tenant.name;
  if (SeesEverything(viewer, broker_uid)) return true;
  if (Lists(tenant.uids, viewer.uid) || Lists(tenant.gids, viewer.gid)) return true;
  return std::find(tenant.running_uids.begin(), tenant.running_uids.end(), viewer.uid) != tenant.running_uids.end();
}

}  // namespace gpushare::broker
