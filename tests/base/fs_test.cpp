#include "base/fs.h"

#include <fcntl.h>
#include <future>
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

// A FIFO (or any non-regular file) planted at atomic_write's temp name, which is predictable
// (the agent is often pid 1 in its container): open() for writing used to wait for a reader
// forever. It is now removed and the write goes ahead.
TEST_F(FsTest, AtomicWriteIsNotHeldByAFifoAtItsTempName) {
  const auto p = join(dir_, "f");
  const auto tmp = join(dir_, ".f.tmp-" + std::to_string(::getpid()));
  ASSERT_EQ(::mkfifo(tmp.c_str(), 0644), 0);
  auto done = std::async(std::launch::async, [&] { return atomic_write(p, "content", 0644); });
  if (done.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    const int fd = ::open(tmp.c_str(), O_RDONLY | O_NONBLOCK);  // let the blocked open() go
    done.wait();
    if (fd >= 0) ::close(fd);
    FAIL() << "atomic_write blocked on a FIFO at its temp name";
  }
  ASSERT_TRUE(done.get().ok());
  EXPECT_EQ(*read_file(p), "content");
}

TEST_F(FsTest, WriteSyncedAndReadRegularFileRefuseWhatIsNotARegularFile) {
  const auto fifo = join(dir_, "fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  auto w = write_synced(fifo, "x", 0644);  // no reader: must not wait for one
  ASSERT_FALSE(w.ok());
  auto r = read_regular_file(fifo);  // no writer: must not wait for one
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("is a FIFO, not a regular file"), std::string::npos)
      << r.error().message;
  const auto file = join(dir_, "file"), link = join(dir_, "link");
  ASSERT_TRUE(atomic_write(file, "data", 0640).ok());
  ASSERT_EQ(::symlink(file.c_str(), link.c_str()), 0);
  auto l = read_regular_file(link);
  ASSERT_FALSE(l.ok()) << "a symlink is never followed";
  EXPECT_EQ(l.error().code, errno_code(ELOOP));
  mode_t mode = 0;
  auto f = read_regular_file(file, 1024, &mode);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(*f, "data");
  EXPECT_EQ(mode & 0777, 0640u);
}

TEST_F(FsTest, AtomicWriteIntoMissingDirFailsWithPath) {
  auto st = atomic_write(join(dir_, "nope/f"), "x", 0644);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("nope"), std::string::npos);
  EXPECT_EQ(st.error().code, errno_code(ENOENT));
}

TEST_F(FsTest, HeldAttributesRereadThroughTheirDescriptorAndAreBounded) {
  HeldAttributes held(2);
  const auto a = join(dir_, "a");
  const auto b = join(dir_, "b");
  const auto c = join(dir_, "c");
  for (const auto& p : {a, b, c}) ASSERT_TRUE(write_synced(p, "1\n", 0644).ok());
  EXPECT_EQ(*held.read(a), "1\n");
  EXPECT_EQ(*held.read(b), "1\n");
  EXPECT_EQ(*held.read(c), "1\n");
  EXPECT_EQ(held.open_count(), 2u) << "at most max_open descriptors are kept";
  held.drop_unread();
  EXPECT_EQ(held.open_count(), 2u) << "both were read";
  // Rewritten in place, as sysfs shows a new value: the kept descriptor reads it.
  ASSERT_TRUE(write_synced(a, "22\n", 0644).ok());
  EXPECT_EQ(*held.read(a), "22\n");
  // Replaced by rename: the kept descriptor still reads the old file (sysfs never does this),
  // which is why only attributes are held this way.
  ASSERT_TRUE(atomic_write(a, "333\n", 0644).ok());
  EXPECT_EQ(*held.read(a), "22\n");
  EXPECT_EQ(held.read(a, 2).error().code, errno_code(EFBIG));
  EXPECT_FALSE(held.read(join(dir_, "missing")).ok());
  // Only `a` was read since: `b`'s descriptor is dropped, `a`'s kept.
  held.drop_unread();
  EXPECT_EQ(held.open_count(), 1u);
  held.drop_unread();
  EXPECT_EQ(held.open_count(), 0u);
  EXPECT_EQ(*held.read(a), "333\n") << "opened afresh";
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
