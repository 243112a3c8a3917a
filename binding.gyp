{
  "targets": [
    {
      "target_name": "slimopt",
      "type": "none",
      "actions": [
        {
          "action_name": "cmake_js_build",
          "inputs": ["CMakeLists.txt"],
          "outputs": ["build/Release/slimopt.node"],
          "action": ["node", "node_modules/cmake-js/bin/cmake-js", "compile", "--out", "build"]
        }
      ]
    }
  ]
}
