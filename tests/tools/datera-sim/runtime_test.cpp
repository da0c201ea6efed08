// The file backend's sparse files and the committer's atomic, coalesced state writes.

#include "tools/datera-sim/runtime.h"

#include <sys/stat.h>

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
  ASSERT_TRUE(files.reconcile(model.exports()).ok());
  const std::string path = files.path_for(model.exports().at(0));
  EXPECT_EQ(path, dir / "vols" + "/" + ai->storage_instances[0].volumes[0].uuid + ".img");
  auto sb = stat_of(path);
  EXPECT_EQ(sb.st_size, 16LL << 30);
  EXPECT_LT(sb.st_blocks * 512, 1 << 20);  // sparse: nothing allocated

  // Someone else's file in the directory is left alone.
  ASSERT_TRUE(fs::write_synced(dir / "vols/notes.txt", "keep", 0644).ok());

  ASSERT_TRUE(model.update_volume("/root", "file-a", "storage-1", "volume-1", {{"size", 20}}).ok());
  ASSERT_TRUE(files.reconcile(model.exports()).ok());
  EXPECT_EQ(stat_of(path).st_size, 20LL << 30);

  ASSERT_TRUE(model.delete_app_instance("/root", "file-a", {{"force", true}}).ok());
  ASSERT_TRUE(files.reconcile(model.exports()).ok());
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(fs::exists(dir / "vols/notes.txt"));
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
