// The file backend's sparse files and the committer's atomic, coalesced state writes.

#include "tools/datera-sim/runtime.h"

#include <fcntl.h>
#include <map>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "tests/testing/run_async.h"
#include "tests/testing/temp_dir.h"
#include "tests/tools/datera-sim/fake_clock.h"

namespace datera::sim {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

json ai_body(const std::string& name, int size) {
  return {{"name", name},
          {"storage_instances",
           {{{"name", "storage-1"}, {"volumes", {{{"name", "volume-1"}, {"size", size}}}}}}}};
}

struct stat stat_of(const std::string& path) {
  struct stat sb {};
  EXPECT_EQ(::stat(path.c_str(), &sb), 0) << path;
  return sb;
}

TEST(FileBackendTest, CreatesGrowsAndRemovesSparseFiles) {
  datera::testing::TempDir dir("dsim");
  FileBackend files(dir / "vols");
  ASSERT_TRUE(files.prepare().ok());
  testing::FakeClock clock;
  Model model(ModelOptions{}, clock.clock());
  auto ai = model.create_app_instance("/root", ai_body("file-a", 16));
  ASSERT_TRUE(ai.ok());
  ASSERT_TRUE(files.reconcile(model.exports(), model.snapshot_views()).ok());
  const std::string path = files.path_for(model.exports().at(0));
  EXPECT_EQ(path, dir / "vols" + "/" + ai->storage_instances[0].volumes[0].uuid + ".img");
  auto sb = stat_of(path);
  EXPECT_EQ(sb.st_size, 16LL << 30);
  EXPECT_LT(sb.st_blocks * 512, 1 << 20);  // sparse: nothing allocated

  // Someone else's file in the directory is left alone.
  ASSERT_TRUE(fs::write_synced(dir / "vols/notes.txt", "keep", 0644).ok());

  ASSERT_TRUE(model.update_volume("/root", "file-a", "storage-1", "volume-1", {{"size", 20}}).ok());
  ASSERT_TRUE(files.reconcile(model.exports(), model.snapshot_views()).ok());
  EXPECT_EQ(stat_of(path).st_size, 20LL << 30);

  ASSERT_TRUE(model.delete_app_instance("/root", "file-a", {{"force", true}}).ok());
  ASSERT_TRUE(files.reconcile(model.exports(), model.snapshot_views()).ok());
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(fs::exists(dir / "vols/notes.txt"));
}

/// Writes `text` at `offset` of the file at `path` (what an initiator's write does to the volume).
void write_at(const std::string& path, off_t offset, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << path;
  EXPECT_EQ(::pwrite(fd, text.data(), text.size(), offset), static_cast<ssize_t>(text.size()));
  ::close(fd);
}

std::string read_at(const std::string& path, off_t offset, size_t n) {
  std::string out(n, '\0');
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << path;
  if (fd < 0) return {};
  const ssize_t got = ::pread(fd, out.data(), n, offset);
  ::close(fd);
  out.resize(got < 0 ? 0 : static_cast<size_t>(got));
  return out;
}

TEST(FileBackendTest, ASnapshotIsAPointInTimeCopyAndClonesCopyTheirSource) {
  datera::testing::TempDir dir("dsim");
  FileBackend files(dir / "vols");
  ASSERT_TRUE(files.prepare().ok());
  testing::FakeClock clock;
  Model model(ModelOptions{}, clock.clock());
  auto ai = model.create_app_instance("/root", ai_body("src", 1));
  ASSERT_TRUE(ai.ok());
  ASSERT_TRUE(files.reconcile(model.exports(), model.snapshot_views()).ok());
  const std::string volume = files.path_for(model.exports().at(0));
  const std::string vol_uuid = ai->storage_instances[0].volumes[0].uuid;
  constexpr off_t kFar = 512LL << 20;
  write_at(volume, 0, "OLD-head");
  write_at(volume, kFar, "OLD-tail");

  auto snap = model.create_snapshot("/root", "src", "storage-1", "volume-1", nullptr);
  ASSERT_TRUE(snap.ok());
  ASSERT_TRUE(files.reconcile(model.exports(), model.snapshot_views()).ok());
  const std::string copy = files.snapshot_path(vol_uuid, snap->utc_ts);
  EXPECT_EQ(copy, dir / "vols/snap-" + vol_uuid + "-" + snap->utc_ts + ".img");
  ASSERT_TRUE(fs::exists(copy));
  EXPECT_FALSE(fs::exists(copy + ".tmp"));
  write_at(volume, 0, "NEW-head");
  write_at(volume, kFar, "NEW-tail");
  // Reconciling again (every later request does) never refreshes an existing snapshot.
  ASSERT_TRUE(files.reconcile(model.exports(), model.snapshot_views()).ok());
  EXPECT_EQ(read_at(copy, 0, 8), "OLD-head");
  EXPECT_EQ(read_at(copy, kFar, 8), "OLD-tail");
  EXPECT_EQ(stat_of(copy).st_size, 1LL << 30);
  EXPECT_LT(stat_of(copy).st_blocks * 512, 16LL << 20) << "sparse: only the data extents copied";

  // A clone of the snapshot has the old bytes; a clone of the volume the new ones.
  const std::string vol_path = "/app_instances/src/storage_instances/storage-1/volumes/volume-1";
  auto from_snap = model.create_app_instance(
      "/root", {{"name", "c-snap"},
                {"clone_snapshot_src", {{"path", vol_path + "/snapshots/" + snap->utc_ts}}}});
  ASSERT_TRUE(from_snap.ok()) << from_snap.error().message;
  auto from_vol = model.create_app_instance(
      "/root", {{"name", "c-vol"}, {"clone_volume_src", {{"path", vol_path}}}});
  ASSERT_TRUE(from_vol.ok()) << from_vol.error().message;
  // The snapshot goes in the same batch as its clone is made: the copy still comes from it.
  ASSERT_TRUE(model.delete_snapshot("/root", "src", "storage-1", "volume-1", snap->utc_ts).ok());
  ASSERT_TRUE(files.reconcile(model.exports(), model.snapshot_views()).ok());
  std::map<std::string, std::string> path_of;
  for (const auto& e : model.exports()) path_of[e.app_instance] = files.path_for(e);
  EXPECT_EQ(read_at(path_of["c-snap"], 0, 8), "OLD-head");
  EXPECT_EQ(read_at(path_of["c-snap"], kFar, 8), "OLD-tail");
  EXPECT_EQ(read_at(path_of["c-vol"], kFar, 8), "NEW-tail");
  EXPECT_EQ(stat_of(path_of["c-snap"]).st_size, 1LL << 30);
  EXPECT_FALSE(fs::exists(copy)) << "a deleted snapshot's file goes";

  // Writes to a clone stay in the clone.
  write_at(path_of["c-vol"], 0, "CLONE-ONLY");
  ASSERT_TRUE(files.reconcile(model.exports(), model.snapshot_views()).ok());
  EXPECT_EQ(read_at(volume, 0, 8), "NEW-head");

  // Deleting an app instance removes its snapshots' files with its own.
  auto later = model.create_snapshot("/root", "src", "storage-1", "volume-1", nullptr);
  ASSERT_TRUE(later.ok());
  ASSERT_TRUE(files.reconcile(model.exports(), model.snapshot_views()).ok());
  const std::string later_copy = files.snapshot_path(vol_uuid, later->utc_ts);
  ASSERT_TRUE(fs::exists(later_copy));
  ASSERT_TRUE(model.delete_app_instance("/root", "src", {{"force", true}}).ok());
  ASSERT_TRUE(files.reconcile(model.exports(), model.snapshot_views()).ok());
  EXPECT_FALSE(fs::exists(later_copy));
  EXPECT_FALSE(fs::exists(volume));
  EXPECT_EQ(read_at(path_of["c-snap"], 0, 8), "OLD-head") << "clones keep their own data";
}

TEST(FileBackendTest, ACloneOfACloneMadeInTheSameBatchCopiesItsData) {
  datera::testing::TempDir dir("dsim");
  FileBackend files(dir / "vols");
  ASSERT_TRUE(files.prepare().ok());
  testing::FakeClock clock;
  Model model(ModelOptions{}, clock.clock());
  ASSERT_TRUE(model.create_app_instance("/root", ai_body("src", 1)).ok());
  ASSERT_TRUE(files.reconcile(model.exports(), model.snapshot_views()).ok());
  write_at(files.path_for(model.exports().at(0)), 4096, "SOURCE");
  const auto vol_path = [](const std::string& ai) {
    return "/app_instances/" + ai + "/storage_instances/storage-1/volumes/volume-1";
  };
  // Many, so the clones' uuids (random) do not happen to sort in creation order.
  std::string from = "src";
  for (int i = 0; i < 8; ++i) {
    const std::string name = "chain-" + std::to_string(i);
    ASSERT_TRUE(model
                    .create_app_instance(
                        "/root", {{"name", name}, {"clone_volume_src", {{"path", vol_path(from)}}}})
                    .ok());
    from = name;
  }
  ASSERT_TRUE(files.reconcile(model.exports(), model.snapshot_views()).ok());
  for (const auto& e : model.exports()) {
    EXPECT_EQ(read_at(files.path_for(e), 4096, 6), "SOURCE") << e.app_instance;
  }
}

TEST(CommitterTest, ConcurrentCommitsWriteAtomicallyAndTheStateLoadsBack) {
  datera::testing::TempDir dir("dsim");
  const std::string state = dir / "state.json";
  FileBackend files(dir / "vols");
  ASSERT_TRUE(files.prepare().ok());
  testing::FakeClock clock;
  Model model(ModelOptions{}, clock.clock());
  boost::asio::io_context ioc;
  boost::asio::thread_pool pool(1);
  Committer committer(ioc.get_executor(), pool, model, state, &files, null_logger());

  ASSERT_TRUE(model.create_app_instance("/root", ai_body("c-1", 1)).ok());
  ASSERT_TRUE(model.create_app_instance("/root", ai_body("c-2", 2)).ok());
  using namespace boost::asio::experimental::awaitable_operators;
  datera::testing::run_async(ioc, [&]() -> boost::asio::awaitable<bool> {
    co_await (committer.commit() && committer.commit() && committer.commit());
    co_return true;
  }());
  ASSERT_TRUE(fs::exists(state));
  EXPECT_EQ(stat_of(state).st_mode & 0777, 0600u);
  EXPECT_EQ(model.exports().size(), 2u);
  for (const auto& e : model.exports()) EXPECT_TRUE(fs::exists(files.path_for(e)));

  Model restored(ModelOptions{}, clock.clock());
  ASSERT_TRUE(load_state(restored, state).ok());
  EXPECT_EQ(restored.get_app_instance("/root", "c-2")->id,
            model.get_app_instance("/root", "c-2")->id);

  Model fresh(ModelOptions{}, clock.clock());
  EXPECT_TRUE(load_state(fresh, dir / "missing.json").ok());  // a fresh start
  ASSERT_TRUE(fs::write_synced(dir / "bad.json", "{not json", 0600).ok());
  EXPECT_FALSE(load_state(fresh, dir / "bad.json").ok());
  pool.join();
}

}  // namespace
}  // namespace datera::sim
