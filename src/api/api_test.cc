// HttpServer/HttpClient over real loopback sockets, and the error mapping.
#include <gtest/gtest.h>

#include <atomic>

#include "api/errors.h"
#include "api/http.h"

namespace ferry::api {
namespace {

class HttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.Route("GET /v1/items/{id}", [](const HttpRequest& r) {
      if (r.Param("id") == "missing") return HttpResponse::Error(Status::NotFound("item missing"));
      return HttpResponse::Json("{\"id\":\"" + r.Param("id") + "\",\"q\":\"" + r.Query("q", "-") +
                                "\"}");
    });
    server_.Route("POST /v1/echo", [](const HttpRequest& r) { return HttpResponse::Json(r.body); });
    server_.Route("GET /v1/public", [](const HttpRequest&) { return HttpResponse::Text("hi"); },
                  /*requires_token=*/false);
    server_.Route("GET /v1/throws", [](const HttpRequest&) -> HttpResponse {
      return HttpResponse::Error(Status::FailedPrecondition("checks failed"),
                                 "{\"checks\":[{\"name\":\"cpu\",\"ok\":false}]}");
    });
    ASSERT_TRUE(server_.Start("127.0.0.1:0").ok());
    url_ = "http://127.0.0.1:" + std::to_string(server_.port());
  }

  HttpServer server_{"s3cret"};
  std::string url_;
};

TEST_F(HttpTest, RoutesPathAndQueryParameters) {
  HttpClient client(url_, "s3cret");
  Result<std::string> r = client.Get("/v1/items/abc?q=x%20y");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "{\"id\":\"abc\",\"q\":\"x y\"}");
  Result<std::string> e = client.Post("/v1/echo", "{\"a\":1}");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(*e, "{\"a\":1}");
}

TEST_F(HttpTest, ErrorBodiesBecomeTheSameStatus) {
  HttpClient client(url_, "s3cret");
  Result<std::string> r = client.Get("/v1/items/missing");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(r.status().message(), "item missing");

  std::string details;
  Result<std::string> f = client.Send("GET", "/v1/throws", "", &details);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(details.find("\"cpu\""), std::string::npos) << details;
}

TEST_F(HttpTest, TokenIsRequired) {
  HttpClient wrong(url_, "nope");
  Result<std::string> r = wrong.Get("/v1/items/abc");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kPermissionDenied);
  Result<std::string> pub = wrong.Get("/v1/public");
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(*pub, "hi");
}

TEST_F(HttpTest, UnknownPathsAndMethods) {
  HttpClient client(url_, "s3cret");
  EXPECT_EQ(client.Get("/v1/nothing").status().code(), ErrorCode::kNotFound);
  Result<std::string> m = client.Delete("/v1/echo");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("not allowed"), std::string::npos);
}

TEST(HttpClientTest, UnreachableServerIsIo) {
  HttpClient client("http://127.0.0.1:1", "t", {.connect_timeout_ms = 500});
  Result<std::string> r = client.Get("/x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kIo);
  EXPECT_NE(r.status().message().find("127.0.0.1:1"), std::string::npos);
}

TEST(ErrorsTest, WireNamesRoundTrip) {
  for (int c = 1; c <= 12; ++c) {
    ErrorCode code = static_cast<ErrorCode>(c);
    EXPECT_EQ(ErrorCodeFromWireName(ErrorCodeWireName(code)), code) << c;
    EXPECT_GE(HttpStatusFor(code), 400);
  }
  Status s = StatusFromErrorBody(502, "<html>bad gateway</html>");
  EXPECT_EQ(s.code(), ErrorCode::kIo);
  EXPECT_NE(s.message().find("502"), std::string::npos);
}

}  // namespace
}  // namespace ferry::api
