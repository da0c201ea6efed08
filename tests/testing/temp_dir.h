#pragma once

// A private directory under /tmp for one test, removed with everything in it afterwards. Short
// paths on purpose: Unix socket paths must fit in 107 bytes.

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace datera::testing {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "dt") {
    std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace datera::testing
