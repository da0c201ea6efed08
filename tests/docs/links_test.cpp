// Every relative link in the project's Markdown (README.md, docs/, each component's README) names a
// file or directory that exists, so a moved or renamed file cannot leave the docs pointing nowhere.

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>

namespace {

namespace fs = std::filesystem;

std::vector<fs::path> markdown_files(const fs::path& root) {
  std::vector<fs::path> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    const auto name = it->path().filename().string();
    if (it->is_directory() && (name.rfind("build", 0) == 0 || name.front() == '.')) {
      it.disable_recursion_pending();  // build trees and .git hold no docs of ours
      continue;
    }
    if (it->is_regular_file() && it->path().extension() == ".md") out.push_back(it->path());
  }
  return out;
}

TEST(DocsLinks, EveryRelativeLinkResolves) {
  const fs::path root = DATERA_SOURCE_DIR;
  const auto files = markdown_files(root);
  ASSERT_GT(files.size(), 20u) << "found too few Markdown files under " << root;
  const std::regex link(R"(\]\(([^)\s]+)\))");
  int checked = 0;
  for (const auto& file : files) {
    std::ifstream in(file);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    for (std::sregex_iterator m(text.begin(), text.end(), link), end; m != end; ++m) {
      std::string target = (*m)[1];
      if (target.find("://") != std::string::npos || target.rfind("mailto:", 0) == 0 ||
          target.front() == '#') {
        continue;
      }
      target = target.substr(0, target.find('#'));
      ++checked;
      EXPECT_TRUE(fs::exists(file.parent_path() / target))
          << fs::relative(file, root).string() << " links to " << target
          << ", which does not exist";
    }
  }
  EXPECT_GT(checked, 10) << "the links the scan should have found";
}

}  // namespace
