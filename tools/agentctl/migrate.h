#pragma once

// `datera-agentctl migrate`: FlexVolume PVs of `datera/iscsi` to CSI PVs of the agent's driver, for
// the same app instances, without reformatting anything. Pure: it reads `kubectl get pv -o json`
// (and optionally `kubectl get pods -A -o json`) and writes manifests and a plan; it never talks
// to the cluster or the array, so running it is always safe (dry-run by nature; the operator
// applies the plan's steps).
//
// The CSI PV keeps the FlexVolume PV's name, capacity, access modes, volume mode, mount options,
// claimRef (so the PVC, whose spec.volumeName names it, binds to it again) and storage class; its
// volumeHandle is the app instance (the `volumeID` option, else the PV name, as FlexVolume chose),
// its fsType the PV's, its volumeAttributes the options that describe the volume. The reclaim
// policy is kept, but the plan first sets the FlexVolume PV to Retain so deleting it keeps the
// volume. A PV is refused, with the reason, when:
//   - its options carry credentials (serverUser/serverPasswd): they must move into a Secret first;
//   - it names another array (backstoreServer) or a secretRef without --secret-namespace (CSI needs
//     the Secret's namespace; the node-stage and controller-publish secrets are set from it);
//   - its retainPolicy is never (the FlexVolume unmount before the move would delete the volume);
//   - it is not Bound to a claim (nothing to re-bind; a Released or Available PV is left alone);
//   - an option this driver would not carry over is set (named in the reason).
// Pods that use its claim are listed: they must be scaled down before the FlexVolume PV goes.
//
// CSI PVs of Datera's own driver (`dsp.csi.daterainc.io`) are imported the same way (a second
// reader, the same writer): the volumeHandle is already the app instance's name ("CSI-" + the PV
// name, checked as an EDF name), the fsType is carried (ext4 when unset, as Datera's node plugin
// chose). Its node plugin reads everything else from the app instance's metadata, so its volume
// attributes (replica_count, placement_mode, ip_pool, QoS...) only mattered at creation: dropped,
// and named in the plan. Refused, with the reason: a nodeStageSecretRef (iSCSI CHAP credentials
// Datera logs in with; this driver logs in without CHAP), delete_on_unmount: "true" (Datera's
// node plugin deletes the volume at the unstage that scaling down causes), an attribute Datera's
// driver does not document, an fsType other than xfs or ext4. Its node plugin must be stopped on
// a node before this driver stages the volume there (the plan says when).

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace datera::agentctl {

using Json = nlohmann::json;

struct MigrateOptions {
  std::string driver = "agent.iscsi.datera.io";
  std::string flex_driver = "datera/iscsi";
  /// Datera's own CSI driver: its PVs are imported too.
  std::string datera_csi_driver = "dsp.csi.daterainc.io";
  /// Where the Secret named by a FlexVolume secretRef lives (CSI secret refs need a namespace).
  std::string secret_namespace;
};

// NOLINTNEXTLINE(bugprone-exception-escape): the implicit moves of nlohmann::json only assert
struct MigratedPv {
  std::string pv;
  std::string volume;                ///< the app instance (volumeHandle)
  std::string from;                  ///< the driver it leaves (flex_driver or datera_csi_driver)
  bool datera_csi = false;           ///< from Datera's CSI driver
  std::vector<std::string> dropped;  ///< attributes and secret refs not carried (creation only)
  std::string claim;                 ///< "namespace/name"
  std::vector<std::string> pods;     ///< "namespace/name" of pods that use the claim
  Json manifest;                     ///< the CSI PV
};

struct Refusal {
  std::string pv;
  std::string reason;
};

struct MigrationPlan {
  std::vector<MigratedPv> migrated;
  std::vector<Refusal> refused;
  size_t other = 0;  ///< PVs of other drivers, left alone

  /// The CSI PVs as one `v1 List` (kubectl apply -f takes it).
  Json manifests() const;
  /// The steps, in order, and the refusals: what an operator reads before doing anything.
  std::string text() const;
};

/// `pvs`: a PersistentVolume, or a List of them (kubectl get pv -o json). `pods`: null, or a Pod
/// List (kubectl get pods -A -o json). Malformed input yields refusals, never an exception.
MigrationPlan plan_migration(const Json& pvs, const Json& pods, const MigrateOptions& options);

}  // namespace datera::agentctl
