#include "agent/common/fs.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/testing/temp_dir.h"

namespace datera::fs {
namespace {

class FsTest : public ::testing::Test {
 protected:
  testing::TempDir tmp_{"dt-fs"};
  const std::string dir_ = tmp_.path();
};

TEST_F(FsTest, AtomicWriteReplacesContentAndMode) {
  const auto p = join(dir_, "f");
  ASSERT_TRUE(atomic_write(p, "one", 0644).ok());
  ASSERT_TRUE(atomic_write(p, "two", 0755).ok());
  EXPECT_EQ(*read_file(p), "two");
  struct stat st {};
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  // No temp file is left behind.
  EXPECT_FALSE(exists(join(dir_, ".f.tmp-" + std::to_string(::getpid()))));
}

TEST_F(FsTest, AtomicWriteIntoMissingDirFailsWithPath) {
  auto st = atomic_write(join(dir_, "nope/f"), "x", 0644);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("nope"), std::string::npos);
  EXPECT_EQ(st.error().code, ENOENT);
}

TEST_F(FsTest, ReadFileIsBounded) {
  const auto p = join(dir_, "big");
  ASSERT_TRUE(atomic_write(p, std::string(100, 'x'), 0644).ok());
  EXPECT_FALSE(read_file(p, 10).ok());
  EXPECT_TRUE(read_file(p, 100).ok());
}

TEST_F(FsTest, EnsureDirCreatesParentsAndFixesMode) {
  const auto p = join(dir_, "a/b/c");
  ASSERT_TRUE(ensure_dir(p, 0750).ok());
  struct stat st {};
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  ASSERT_EQ(::chmod(p.c_str(), 0777), 0);
  ASSERT_TRUE(ensure_dir(p, 0750).ok());
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  ASSERT_TRUE(atomic_write(join(dir_, "file"), "", 0644).ok());
  EXPECT_FALSE(ensure_dir(join(dir_, "file"), 0750).ok());
}

TEST(FsPaths, DirnameBasenameJoin) {
  EXPECT_EQ(dirname("/a/b/c"), "/a/b");
  EXPECT_EQ(dirname("/a"), "/");
  EXPECT_EQ(dirname("a"), ".");
  EXPECT_EQ(basename("/a/b/c"), "c");
  EXPECT_EQ(join("/a/", "b"), "/a/b");
  EXPECT_EQ(join("/a", "b"), "/a/b");
}

}  // namespace
}  // namespace datera::fs
