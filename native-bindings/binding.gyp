{
  "targets": [
    {
      "target_name": "fairway_native",
      "sources": ["src/affinity.cc"],
      "defines": ["NAPI_VERSION=8"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra"]
    }
  ]
}
