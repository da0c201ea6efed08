// Every relative link in the project's Markdown (README.md, docs/, each component's README) names a
// file or directory that exists, so a moved or renamed file cannot leave the docs pointing nowhere.
// And every "<file>.md §n" citation, in the docs or in a code comment, names a Markdown file that
// is in the repository: a reader cannot follow a section of a document we do not ship.

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>

namespace {

namespace fs = std::filesystem;

/// Files under `root` (not build trees or dot-dirs) whose extension is one of `exts`.
std::vector<fs::path> project_files(const fs::path& root, const std::vector<std::string>& exts) {
  std::vector<fs::path> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    const auto name = it->path().filename().string();
    if (it->is_directory() && (name.rfind("build", 0) == 0 || name.front() == '.')) {
      it.disable_recursion_pending();  // build trees and .git hold no docs of ours
      continue;
    }
    if (!it->is_regular_file()) continue;
    const auto ext = it->path().extension().string();
    if (std::find(exts.begin(), exts.end(), ext) != exts.end() || (exts.empty() && ext.empty())) {
      out.push_back(it->path());
    }
  }
  return out;
}

std::vector<fs::path> markdown_files(const fs::path& root) {
  return project_files(root, {".md"});
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(DocsLinks, EveryRelativeLinkResolves) {
  const fs::path root = DATERA_SOURCE_DIR;
  const auto files = markdown_files(root);
  ASSERT_GT(files.size(), 20u) << "found too few Markdown files under " << root;
  const std::regex link(R"(\]\(([^)\s]+)\))");
  int checked = 0;
  for (const auto& file : files) {
    const std::string text = read_text(file);
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

TEST(DocsLinks, EverySectionCitationNamesADocumentInTheRepository) {
  const fs::path root = DATERA_SOURCE_DIR;
  std::vector<std::string> docs;  // every Markdown file, relative to the root
  for (const auto& f : markdown_files(root)) docs.push_back(fs::relative(f, root).string());
  // Matches "modes.md §2", "docs/security.md §1", "(architecture.md, §3)".
  const std::regex cite(R"(([A-Za-z0-9_./-]+\.md)[,)]?\s*§\s*[0-9])");
  const auto files = project_files(root, {".md", ".h", ".cpp", ".sh", ".txt", ".yaml", ".py"});
  int checked = 0;
  for (const auto& file : files) {
    const std::string text = read_text(file);
    if (text.find("§") == std::string::npos) continue;  // std::regex is slow; most files cite none
    for (std::sregex_iterator m(text.begin(), text.end(), cite), end; m != end; ++m) {
      const std::string named = (*m)[1];
      ++checked;
      // A bare name may be any of our documents; a path must be one, from the root or the citer
      // (an absolute path, even one that exists on this machine, is not in the repository).
      const bool found = std::any_of(docs.begin(), docs.end(), [&](const std::string& d) {
        if (named.find('/') == std::string::npos) return fs::path(d).filename() == named;
        const auto beside = fs::relative(fs::weakly_canonical(file.parent_path() / named), root);
        return named.front() != '/' && (d == named || beside == fs::path(d));
      });
      EXPECT_TRUE(found) << fs::relative(file, root).string() << " cites " << (*m)[0] << ", but no "
                         << named << " is in the repository";
    }
  }
  // The examples in this file's own comment count: the scan is known to read code comments.
  EXPECT_GT(checked, 0) << "the citations the scan should have found";
}

}  // namespace
