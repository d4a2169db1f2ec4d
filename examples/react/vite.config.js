// No React plugin: Vite's own esbuild compiles the JSX (the automatic runtime imports React by itself).
export default {
  base: "./", // relative asset paths: dist/ works from any folder or server
  esbuild: { jsx: "automatic" },
};
