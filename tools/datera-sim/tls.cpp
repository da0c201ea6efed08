#include "tools/datera-sim/tls.h"

#include <cerrno>
#include <cstdio>
#include <fcntl.h>
#include <memory>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/ip/address.hpp>

namespace datera::sim {

namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct ExtFree {
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
};
struct FileClose {
  void operator()(FILE* f) const { std::fclose(f); }
};

Error ssl_error(const std::string& what) {
  const unsigned long code = ERR_get_error();
  char buf[256] = "unknown error";
  if (code != 0) ERR_error_string_n(code, buf, sizeof buf);
  ERR_clear_error();
  return Error{"making the self-signed certificate: " + what + ": " + buf};
}

Status add_ext(X509* cert, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  std::unique_ptr<X509_EXTENSION, ExtFree> ext(
      X509V3_EXT_conf_nid(nullptr, &ctx, nid, const_cast<char*>(value.c_str())));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) return ssl_error("extension " + value);
  return ok_status();
}

/// Opens for writing with `mode`, truncating; the key must never be readable by others.
Result<std::unique_ptr<FILE, FileClose>> open_for_write(const std::string& path, mode_t mode) {
  ::unlink(path.c_str());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return Error::from_errno("creating " + path, errno);
  FILE* f = ::fdopen(fd, "w");
  if (!f) {
    ::close(fd);
    return Error::from_errno("opening " + path, errno);
  }
  return std::unique_ptr<FILE, FileClose>(f);
}

}  // namespace

Status make_self_signed(const std::string& cert_path, const std::string& key_path,
                        const std::vector<std::string>& names) {
  std::unique_ptr<EVP_PKEY, PkeyFree> key(EVP_EC_gen("P-256"));
  if (!key) return ssl_error("P-256 key");
  std::unique_ptr<X509, X509Free> cert(X509_new());
  if (!cert) return ssl_error("X509_new");
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) return ssl_error("serial");
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  const bool serial_ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  if (!serial_ok) return ssl_error("serial");
  X509_set_version(cert.get(), 2);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);  // tolerate small clock skew
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 365L * 24 * 3600);
  X509_NAME* subject = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("datera-sim"), -1, -1, 0);
  X509_set_issuer_name(cert.get(), subject);
  if (X509_set_pubkey(cert.get(), key.get()) != 1) return ssl_error("public key");

  std::string san;
  for (const auto& name : names) {
    if (name.empty()) continue;
    boost::system::error_code ec;
    boost::asio::ip::make_address(name, ec);
    san += (san.empty() ? "" : ",") + std::string(ec ? "DNS:" : "IP:") + name;
  }
  if (san.empty()) san = "DNS:localhost";
  // A self-signed certificate that clients load as their trust anchor: mark it a CA, as
  // `openssl req -x509` does, so verification accepts it.
  if (auto st = add_ext(cert.get(), NID_basic_constraints, "critical,CA:TRUE"); !st) return st;
  if (auto st = add_ext(cert.get(), NID_subject_alt_name, san); !st) return st;
  if (auto st = add_ext(cert.get(), NID_subject_key_identifier, "hash"); !st) return st;
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) <= 0) return ssl_error("signing");

  auto key_file = open_for_write(key_path, 0600);
  if (!key_file) return key_file.error();
  if (PEM_write_PrivateKey(key_file->get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return ssl_error("writing " + key_path);
  auto cert_file = open_for_write(cert_path, 0644);
  if (!cert_file) return cert_file.error();
  if (PEM_write_X509(cert_file->get(), cert.get()) != 1) return ssl_error("writing " + cert_path);
  return ok_status();
}

Result<std::shared_ptr<boost::asio::ssl::context>> server_tls_context(const std::string& cert_path,
                                                                      const std::string& key_path) {
  namespace ssl = boost::asio::ssl;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  boost::system::error_code ec;
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                   ec);
  if (!ec) ctx->use_certificate_chain_file(cert_path, ec);
  if (ec) return Error{"loading TLS certificate " + cert_path + ": " + ec.message()};
  ctx->use_private_key_file(key_path, ssl::context::pem, ec);
  if (ec) return Error{"loading TLS key " + key_path + ": " + ec.message()};
  return ctx;
}

}  // namespace datera::sim
