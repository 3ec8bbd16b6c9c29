{
  "targets": [
    {
      "target_name": "aog_chain",
      "sources": ["aog_chain.c"],
      "cflags": ["-O3", "-Wall", "-Wextra", "-Wno-deprecated-declarations"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
